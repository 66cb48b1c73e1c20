import AutoVoltMongo

// Tests read small, known result sets whole, to compare them; the product's code may not (the
// reads there take a limit or a batch closure, so nothing grows with the data).
extension MongoClient {
    /// Every matching document, gathered from `forEachBatch`.
    public func find(_ collection: String, filter: BSONDocument, sort: BSONDocument? = nil,
                     projection: BSONDocument? = nil) throws(MongoError) -> [BSONDocument] {
        var all: [BSONDocument] = []
        try forEachBatch(collection, filter: filter, sort: sort, projection: projection) { (batch) throws(MongoError) in
            all += batch
        }
        return all
    }

    /// Every result of the pipeline, gathered from `aggregateBatches`.
    public func aggregate(_ collection: String, pipeline: [BSONDocument]) throws(MongoError) -> [BSONDocument] {
        var all: [BSONDocument] = []
        try aggregateBatches(collection, pipeline: pipeline) { (batch) throws(MongoError) in all += batch }
        return all
    }
}
