import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1

/// Hummingbird's HTTP/1 channel with HTTP/1.0 connection semantics, which it does not follow
/// (the version is gone once a request is an `HTTPRequest`): it keeps every connection open
/// unless the request says `Connection: close`. An HTTP/1.0 client such as `ab` (the AutoVolt
/// deployment guide's load test) then waits for the end of a response that never ends and times
/// out. `HTTP10ConnectionHandler` sits after NIO's request decoder, where the version is still
/// known.
struct HTTP1CompatibleChannel: ServerChildChannel {
    let inner: HTTP1Channel

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<HTTP1Channel.Value> {
        inner.setup(channel: channel, logger: logger).flatMapThrowing { value in
            let decoder = try channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try channel.pipeline.syncOperations.addHandler(HTTP10ConnectionHandler(), position: .after(decoder))
            return value
        }
    }

    func handle(value: HTTP1Channel.Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }
}

extension HTTPServerBuilder {
    /// `.http1()` with HTTP/1.0 connection semantics (`HTTP1CompatibleChannel`).
    static var http1Compatible: HTTPServerBuilder {
        .init { responder in HTTP1CompatibleChannel(inner: HTTP1Channel(responder: responder)) }
    }
}

/// A request that is not keep-alive (HTTP/1.0 without `Connection: keep-alive`, or any
/// `Connection: close`) gets `Connection: close`, so the server closes after answering it; an
/// HTTP/1.0 keep-alive request gets `Connection: keep-alive` on its response, as HTTP/1.0
/// clients require before they send the next request on the connection.
final class HTTP10ConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// Per request in flight, in order: whether its response must say `keep-alive`.
    private var announceKeepAlive: CircularBuffer<Bool> = []

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = unwrapInboundIn(data) else {
            context.fireChannelRead(data)
            return
        }
        let keepAlive = head.isKeepAlive
        if !keepAlive { head.headers.replaceOrAdd(name: "Connection", value: "close") }
        announceKeepAlive.append(keepAlive && head.version.major == 1 && head.version.minor == 0)
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .head(var head) = unwrapOutboundIn(data), let announce = announceKeepAlive.popFirst() else {
            context.write(data, promise: promise)
            return
        }
        if announce { head.headers.replaceOrAdd(name: "Connection", value: "keep-alive") }
        context.write(wrapOutboundOut(.head(head)), promise: promise)
    }
}
