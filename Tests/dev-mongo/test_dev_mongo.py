"""Tests for scripts/dev-mongo, the development MongoDB wire-protocol server.

Run with Debian's interpreter (it sees python3-pymongo, -mockupdb, -mongomock):

    /usr/bin/python3 -m unittest discover -s Tests/dev-mongo -v

Every test starts dev-mongo as a subprocess on --port 0 and talks to it with
pymongo exactly as an application would talk to mongod.
"""

import datetime
import os
import select
import socket
import struct
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from bson import Binary, Decimal128, Int64, ObjectId, SON
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
import bson
from pymongo import MongoClient, ReturnDocument, UpdateOne, errors, monitoring

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, 'scripts', 'dev-mongo')
START_TIMEOUT = 15.0
UUID_UNSPECIFIED = UuidRepresentation.UNSPECIFIED


MISSING_FIELD = object()


class Server(object):
    """A dev-mongo subprocess; always stopped by the test that starts it."""

    def __init__(self, *args):
        self.args = list(args)
        self.proc = subprocess.Popen(
            [SCRIPT, '--port', '0', '--quiet'] + self.args,
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        line = b''
        while not line.endswith(b'\n'):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.kill()
                raise AssertionError('dev-mongo did not start (got %r)' % line)
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 1)
                if not chunk:
                    continue
                line += chunk
        text = line.decode().strip()
        prefix = 'dev-mongo listening on 127.0.0.1:'
        if not text.startswith(prefix):
            self.kill()
            raise AssertionError('unexpected first line %r' % text)
        self.port = int(text[len(prefix):])
        self.clients = []

    def client(self, uri_options='', **kwargs):
        kwargs.setdefault('serverSelectionTimeoutMS', 5000)
        kwargs.setdefault('connectTimeoutMS', 5000)
        c = MongoClient('mongodb://127.0.0.1:%d/%s' % (self.port, uri_options), **kwargs)
        self.clients.append(c)
        return c

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        for c in self.clients:
            c.close()
        self.clients = []
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


class CommandLog(monitoring.CommandListener):
    """Records the commands pymongo sends."""

    def __init__(self):
        self.commands = []

    def started(self, event):
        self.commands.append((event.command_name, event.command))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass

    def names(self):
        return [name for name, _ in self.commands]


class StandaloneTests(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.server = Server()
        cls.log = CommandLog()
        cls.client = cls.server.client(event_listeners=[cls.log])

    @classmethod
    def tearDownClass(cls):
        rc = cls.server.stop()
        assert rc == 0, rc

    def db(self):
        return self.client['t_%s' % self._testMethodName[:50]]

    def test_hello_is_standalone_primary(self):
        hello = self.client.admin.command('hello')
        self.assertTrue(hello['isWritablePrimary'])
        self.assertEqual(hello['maxWireVersion'], 13)
        self.assertEqual(hello['maxWriteBatchSize'], 100000)
        self.assertEqual(hello['logicalSessionTimeoutMinutes'], 30)
        self.assertNotIn('setName', hello)
        legacy = self.client.admin.command('isMaster')
        self.assertTrue(legacy['ismaster'])
        self.assertEqual(self.client.admin.command('ping')['ok'], 1.0)
        self.assertEqual(self.client.server_info()['versionArray'][0], 5)

    def test_compound_index_prefix_equality_is_exact(self):
        # The prefix map answers equality on a compound index's first field; results must be
        # exactly what a scan gives, through inserts, updates and deletes.
        coll = self.db().events
        coll.create_index([('device', 1), ('ts', 1)])
        coll.insert_many([{'_id': i, 'device': 'd%d' % (i % 5), 'ts': i, 'processed': i % 2 == 0} for i in range(500)])
        def ids(q):
            return sorted(d['_id'] for d in coll.find(q))
        self.assertEqual(ids({'device': 'd1'}), list(range(1, 500, 5)))
        self.assertEqual(ids({'device': 'd1', 'processed': False}), list(range(1, 500, 10)))
        self.assertEqual(ids({'device': 'd1', 'ts': {'$gte': 480}}), [481, 486, 491, 496])
        coll.update_one({'_id': 1}, {'$set': {'device': 'd2'}})
        coll.delete_one({'_id': 6})
        self.assertEqual(ids({'device': 'd1'})[:2], [11, 16])
        self.assertIn(1, ids({'device': 'd2'}))
        self.assertEqual(ids({'device': {'$in': ['d3', 'd4']}}), sorted(list(range(3, 500, 5)) + list(range(4, 500, 5))))
        # An $or whose clauses each have candidates is answered from their union, exactly.
        self.assertEqual(ids({'$or': [{'device': 'd3', 'ts': {'$gte': 490}}, {'device': 'd4', 'ts': {'$lt': 10}},
                                      {'device': 'd3', 'ts': 493}]}), [4, 9, 493, 498])
        self.assertEqual(ids({'processed': True, '$or': [{'device': 'd0'}, {'ts': 7}]}), list(range(0, 500, 10)))
        self.assertEqual(ids({'$or': [{'device': 'd0', 'ts': {'$lt': 12}}, {'ts': 7}]}), [0, 5, 7, 10])
        start = time.time()
        for _ in range(200):
            coll.find_one({'device': 'd3', 'processed': False})
        self.assertLess(time.time() - start, 5)

    def test_unknown_command(self):
        with self.assertRaises(errors.OperationFailure) as cm:
            self.db().command('frobnicate', 1)
        d = cm.exception.details
        self.assertEqual(d['code'], 59)
        self.assertEqual(d['codeName'], 'CommandNotFound')
        self.assertEqual(d['errmsg'], "no such command: 'frobnicate'")

    def test_insert_many_unordered_duplicates(self):
        col = self.db().readings
        col.create_index([('device', 1), ('seq', 1)], unique=True, name='device_seq')
        col.insert_many([{'device': 'a', 'seq': i} for i in range(5)])
        batch = [{'device': 'a', 'seq': 1}, {'device': 'b', 'seq': 1},
                 {'device': 'a', 'seq': 3}, {'device': 'b', 'seq': 2},
                 {'device': 'b', 'seq': 1}]
        with self.assertRaises(errors.BulkWriteError) as cm:
            col.insert_many(batch, ordered=False)
        details = cm.exception.details
        self.assertEqual(details['nInserted'], 2)
        errs = details['writeErrors']
        self.assertEqual([e['index'] for e in errs], [0, 2, 4])
        self.assertTrue(all(e['code'] == 11000 for e in errs))
        self.assertEqual(
            errs[0]['errmsg'],
            'E11000 duplicate key error collection: %s.readings index: device_seq '
            'dup key: { device: "a", seq: 1 }' % self.db().name)
        self.assertEqual(errs[0]['keyValue'], {'device': 'a', 'seq': 1})
        self.assertEqual(errs[0]['keyPattern'], {'device': 1, 'seq': 1})
        self.assertEqual(errs[2]['keyValue'], {'device': 'b', 'seq': 1})
        self.assertEqual(col.count_documents({}), 7)
        # compound uniqueness: same seq on another device is fine
        col.insert_one({'device': 'c', 'seq': 1})

    def test_insert_ordered_stops_at_first_error(self):
        col = self.db().c
        col.insert_one({'_id': 2})
        with self.assertRaises(errors.BulkWriteError) as cm:
            col.insert_many([{'_id': 1}, {'_id': 2}, {'_id': 3}], ordered=True)
        self.assertEqual(cm.exception.details['nInserted'], 1)
        self.assertEqual(cm.exception.details['writeErrors'][0]['errmsg'],
                         'E11000 duplicate key error collection: %s.c index: _id_ '
                         'dup key: { _id: 2 }' % self.db().name)
        self.assertEqual(sorted(d['_id'] for d in col.find()), [1, 2])

    def test_insert_assigns_object_id_first(self):
        col = self.db().c
        res = col.insert_one({'a': 1})
        raw = col.with_options(codec_options=CodecOptions(document_class=RawBSONDocument)).find_one()
        self.assertEqual(list(raw.keys()), ['_id', 'a'])
        self.assertIsInstance(raw['_id'], ObjectId)
        self.assertEqual(raw['_id'], res.inserted_id)

    def test_upsert_set_on_insert_inc_max(self):
        col = self.db().stats
        col.create_index([('device', 1), ('day', 1)], unique=True)
        t1 = datetime.datetime(2024, 5, 1, 10, 0, 0)
        t2 = datetime.datetime(2024, 5, 1, 11, 0, 0)

        def bump(ts):
            return col.update_one(
                {'device': 'd1', 'day': '2024-05-01'},
                {'$setOnInsert': {'created': ts}, '$inc': {'count': Int64(1)},
                 '$max': {'last': ts}},
                upsert=True)
        r1 = bump(t2)
        self.assertIsNotNone(r1.upserted_id)
        self.assertEqual(r1.matched_count, 0)
        r2 = bump(t1)
        self.assertIsNone(r2.upserted_id)
        self.assertEqual((r2.matched_count, r2.modified_count), (1, 1))
        doc = col.find_one({'device': 'd1'})
        self.assertEqual(doc['created'], t2)      # $setOnInsert only on insert
        self.assertEqual(doc['last'], t2)         # $max kept the later date
        self.assertEqual(doc['count'], 2)
        self.assertIs(type(doc['count']), Int64)  # int64 + int64 stays int64
        self.assertEqual(doc['day'], '2024-05-01')

    def test_update_unique_violation_and_operators(self):
        col = self.db().u
        col.create_index('k', unique=True)
        col.insert_many([{'_id': 1, 'k': 1, 'a': [1]}, {'_id': 2, 'k': 2}])
        with self.assertRaises(errors.DuplicateKeyError) as cm:
            col.update_one({'_id': 2}, {'$set': {'k': 1}})
        self.assertEqual(cm.exception.details['keyValue'], {'k': 1})
        self.assertEqual(col.find_one({'_id': 2})['k'], 2)
        col.update_one({'_id': 1}, {'$push': {'a': 2}, '$addToSet': {'s': 'x'},
                                    '$unset': {'k': ''}, '$mul': {'m': 3}})
        self.assertEqual(col.find_one({'_id': 1}), {'_id': 1, 'a': [1, 2], 's': ['x'], 'm': 0})
        with self.assertRaises(errors.WriteError) as cm:
            col.update_one({'_id': 1}, {'$set': {'z': 1}, '$inc': {'z': 1}})
        self.assertEqual(cm.exception.code, 40)
        r = col.update_many({}, {'$set': {'flag': True}})
        self.assertEqual((r.matched_count, r.modified_count), (2, 2))
        r = col.update_many({}, {'$set': {'flag': True}})
        self.assertEqual((r.matched_count, r.modified_count), (2, 0))
        self.assertEqual(col.delete_many({'flag': True}).deleted_count, 2)

    def test_find_sort_limit_and_get_more(self):
        col = self.db().many
        col.insert_many([{'n': i, 'grp': i % 4} for i in range(250)])
        self.log.commands.clear()
        docs = list(col.find({}, {'_id': 0}).sort('n', -1).limit(230))
        self.assertEqual([d['n'] for d in docs], list(range(249, 19, -1)))
        self.assertEqual(docs[0], {'n': 249, 'grp': 1})
        names = self.log.names()
        self.assertEqual(names[0], 'find')
        self.assertIn('getMore', names)          # first batch is 101 documents
        self.log.commands.clear()
        docs = list(col.find({'grp': 2}).sort([('n', 1)]).skip(3).batch_size(10))
        self.assertEqual([d['n'] for d in docs], list(range(14, 250, 4)))
        self.assertGreaterEqual(self.log.names().count('getMore'), 5)
        self.assertEqual(len(list(col.find())), 250)

    def test_aggregate_group(self):
        col = self.db().agg
        col.insert_many([{'device': 'd%d' % (i % 3), 'v': i} for i in range(30)])
        res = list(col.aggregate([
            {'$match': {'v': {'$gte': 3}}},
            {'$group': {'_id': '$device', 'n': {'$sum': 1}, 'total': {'$sum': '$v'},
                        'max': {'$max': '$v'}}},
            {'$sort': {'_id': 1}},
            {'$project': {'n': 1, 'total': 1, 'max': 1}},
            {'$limit': 2}]))
        self.assertEqual(res, [{'_id': 'd0', 'n': 9, 'total': 135, 'max': 27},
                               {'_id': 'd1', 'n': 9, 'total': 144, 'max': 28}])
        self.assertEqual(list(col.aggregate([{'$match': {'device': 'd2'}}, {'$count': 'c'}])),
                         [{'c': 10}])
        self.assertEqual(col.count_documents({'device': 'd1'}), 10)
        self.assertEqual(col.estimated_document_count(), 30)
        self.assertEqual(sorted(col.distinct('device')), ['d0', 'd1', 'd2'])

    def test_aggregate_group_sums_in_one_pass(self):
        # The one-pass $group (plain field keys, $sum of a constant or a field) gives what
        # mongod gives: null for a missing key, non-numbers skipped, int sums stay int.
        col = self.db().sums
        col.insert_many([{'d': 'a', 'day': 1, 'wh': 1.5, 'n': 2}, {'d': 'a', 'day': 1, 'wh': 'x', 'n': 3},
                         {'d': 'a', 'day': 2, 'wh': 2.0}, {'d': 'b', 'day': 1, 'wh': 4.0, 'n': 1}, {'day': 1, 'n': 7},
                         {'d': 'b', 'day': 1, 'q': {'r': 5}}])
        res = sorted(col.aggregate([{'$match': {'day': 1}},
                                    {'$group': {'_id': '$d', 'c': {'$sum': 1}, 'wh': {'$sum': '$wh'}, 'n': {'$sum': '$n'},
                                                'r': {'$sum': '$q.r'}}}]),
                     key=lambda g: str(g['_id']))
        self.assertEqual(res, [{'_id': None, 'c': 1, 'wh': 0, 'n': 7, 'r': 0},
                               {'_id': 'a', 'c': 2, 'wh': 1.5, 'n': 5, 'r': 0},
                               {'_id': 'b', 'c': 2, 'wh': 4.0, 'n': 1, 'r': 5}])
        self.assertIsInstance(res[1]['n'], int)
        col.insert_one({'d': None, 'day': 1})
        res = sorted(col.aggregate([{'$group': {'_id': {'d': '$d', 'day': '$day'}, 'c': {'$sum': 1}}}]),
                     key=lambda g: (str(g['_id'].get('d', '~')), g['_id']['day']))
        # A missing field is left out of the key; null is a value of its own.
        self.assertEqual([(g['_id'], g['c']) for g in res],
                         [({'d': None, 'day': 1}, 1), ({'d': 'a', 'day': 1}, 2), ({'d': 'a', 'day': 2}, 1), ({'d': 'b', 'day': 1}, 2),
                          ({'day': 1}, 1)])

    def test_simple_filters_match_like_mongomock(self):
        # The compiled predicate for simple filters must agree with mongomock's general one on
        # every shape a field can take: missing, null, numbers of each type, booleans, strings,
        # arrays of scalars or documents, embedded documents.
        from mongomock.filtering import filter_applies
        # (Booleans apart: mongomock takes true for 1, mongod does not; checked on their own below.)
        values = [MISSING_FIELD, None, 0, 1, 1.0, Int64(1), 'a', 'b', [1, 'a'], [],
                  [{'x': 1}], {'x': 1}, {'x': [1, 2]}, {'x': {'y': 'a'}}, [[1]]]
        docs = []
        for i, v in enumerate(values):
            for j, w in enumerate(values):
                d = {'_id': i * 100 + j}
                if v is not MISSING_FIELD:
                    d['f'] = v
                if w is not MISSING_FIELD:
                    d['g'] = {'x': w}
                docs.append(d)
        col = self.db().shapes
        col.insert_many(docs)
        queries = [{'f': 1}, {'f': 'a'}, {'f': {'$eq': 1.0}}, {'f': {'$in': [0, 'b']}}, {'f': {'$in': []}},
                   {'f': {'$exists': True}}, {'f': {'$exists': False}}, {'g.x': 1}, {'g.x.y': 'a'}, {'g.x': {'$exists': False}},
                   {'f': 1, 'g.x': {'$in': [2, 'a']}}, {'f.x': 1}, {'f.x': {'$exists': True}}]
        stored = {d['_id']: d for d in col.find({})}
        for q in queries:
            got = sorted(d['_id'] for d in col.find(q))
            want = sorted(i for i, d in stored.items() if filter_applies(q, d))
            self.assertEqual(got, want, q)
        flags = self.db().flags
        flags.insert_many([{'_id': 1, 'f': True}, {'_id': 2, 'f': 1}, {'_id': 3, 'f': [0, True]}, {'_id': 4, 'f': False}])
        self.assertEqual(sorted(d['_id'] for d in flags.find({'f': True})), [1, 3])
        self.assertEqual(sorted(d['_id'] for d in flags.find({'f': 1})), [2])
        self.assertEqual(sorted(d['_id'] for d in flags.find({'f': {'$in': [False, 0]}})), [3, 4])

    def test_find_and_modify(self):
        col = self.db().jobs
        col.insert_many([{'_id': i, 'state': 'new', 'prio': i} for i in range(5)])
        doc = col.find_one_and_update({'state': 'new'}, {'$set': {'state': 'taken'}},
                                      sort=[('prio', -1)], projection={'state': 1},
                                      return_document=ReturnDocument.AFTER)
        self.assertEqual(doc, {'_id': 4, 'state': 'taken'})
        before = col.find_one_and_update({'_id': 0}, {'$inc': {'tries': 1}})
        self.assertNotIn('tries', before)
        up = col.find_one_and_update({'_id': 99}, {'$set': {'state': 'x'}}, upsert=True,
                                     return_document=ReturnDocument.AFTER)
        self.assertEqual(up, {'_id': 99, 'state': 'x'})
        gone = col.find_one_and_delete({'_id': 1})
        self.assertEqual(gone['_id'], 1)
        self.assertIsNone(col.find_one({'_id': 1}))
        self.assertIsNone(col.find_one_and_update({'_id': 1234}, {'$set': {'a': 1}}))

    def test_index_management(self):
        db = self.db()
        col = db.idx
        col.insert_many([{'x': 1}, {'x': 1}])
        with self.assertRaises(errors.OperationFailure) as cm:
            col.create_index('x', unique=True)
        self.assertEqual(cm.exception.code, 11000)
        self.assertEqual([i['name'] for i in col.list_indexes()], ['_id_'])
        col.create_index('at', expireAfterSeconds=3600, name='at_ttl')
        col.create_index([('a', 1), ('b', -1)], name='a_b',
                         partialFilterExpression={'a': {'$exists': True}})
        again = db.command('createIndexes', 'idx',
                           indexes=[{'key': {'at': 1}, 'name': 'at_ttl', 'expireAfterSeconds': 3600}])
        self.assertEqual(again['note'], 'all indexes already exist')
        info = {i['name']: i for i in col.list_indexes()}
        self.assertEqual(info['at_ttl']['expireAfterSeconds'], 3600)
        self.assertEqual(info['a_b']['key'], SON([('a', 1), ('b', -1)]))
        self.assertEqual(info['a_b']['partialFilterExpression'], {'a': {'$exists': True}})
        with self.assertRaises(errors.OperationFailure) as cm:
            db.command('createIndexes', 'idx', indexes=[{'key': {'at': 1}, 'name': 'other'}])
        self.assertEqual(cm.exception.code, 85)
        col.drop_index('a_b')
        self.assertEqual(sorted(i['name'] for i in col.list_indexes()), ['_id_', 'at_ttl'])
        col.drop()
        self.assertNotIn('idx', db.list_collection_names())

    def test_transaction_numbers_refused_on_standalone(self):
        with self.client.start_session() as s:
            with self.assertRaises(errors.OperationFailure) as cm:
                self.db().command(SON([('insert', 'c'), ('documents', [{'a': 1}]),
                                       ('txnNumber', Int64(1))]), session=s)
        self.assertEqual(cm.exception.code, 20)

    def test_insert_10000_timing(self):
        col = self.db().bulk
        col.create_index([('device', 1), ('seq', 1)], unique=True)
        now = datetime.datetime.utcnow()
        t0 = time.perf_counter()
        for b in range(20):
            col.insert_many([{'device': 'd%d' % (i % 50), 'seq': Int64(b * 500 + i),
                              'ts': now, 'v': i * 0.5} for i in range(500)], ordered=False)
        elapsed = time.perf_counter() - t0
        sys.stderr.write('\n[dev-mongo] 10,000 inserts in batches of 500 with a compound '
                         'unique index: %.3f s (%.0f docs/s) ... ' % (elapsed, 10000 / elapsed))
        self.assertEqual(col.estimated_document_count(), 10000)
        self.assertLess(elapsed, 15.0)           # generous: shared, noisy machines
        t0 = time.perf_counter()
        for i in range(0, 10000, 10):
            self.assertIsNotNone(col.find_one({'device': 'd%d' % (i % 50), 'seq': Int64(i)}))
        sys.stderr.write('1,000 equality lookups: %.3f s ... ' % (time.perf_counter() - t0))


class ReplicaSetTests(unittest.TestCase):

    def test_replica_set_retryable_majority(self):
        server = Server('--replset', 'rs0')
        try:
            log = CommandLog()
            client = server.client('?replicaSet=rs0&retryWrites=true&w=majority&journal=true',
                                   event_listeners=[log])
            hello = client.admin.command('hello')
            self.assertEqual(hello['setName'], 'rs0')
            self.assertEqual(hello['hosts'], ['127.0.0.1:%d' % server.port])
            self.assertEqual(hello['primary'], '127.0.0.1:%d' % server.port)
            self.assertTrue(hello['isWritablePrimary'])
            col = client.rsdb.events
            col.create_index('eid', unique=True)
            col.insert_one({'eid': 1})
            col.update_one({'eid': 2}, {'$inc': {'n': 1}}, upsert=True)
            col.find_one_and_update({'eid': 1}, {'$set': {'seen': True}})
            with self.assertRaises(errors.DuplicateKeyError):
                col.insert_one({'eid': 1})
            self.assertEqual(client.primary, ('127.0.0.1', server.port))  # replica set view
            writes = [cmd for name, cmd in log.commands
                      if name in ('insert', 'update', 'findAndModify')]
            self.assertTrue(writes)
            for cmd in writes:
                self.assertIn('txnNumber', cmd)
                self.assertIn('lsid', cmd)
                self.assertEqual(cmd['writeConcern'], {'w': 'majority', 'j': True})
            # A retried statement (same lsid + txnNumber) is not executed twice.
            with client.start_session() as s:
                cmd = SON([('insert', 'events'), ('documents', [{'eid': 100}]),
                           ('txnNumber', Int64(7))])
                first = client.rsdb.command(cmd, session=s)
                second = client.rsdb.command(cmd, session=s)
                self.assertEqual((first['n'], second['n']), (1, 1))
            self.assertEqual(col.count_documents({'eid': 100}), 1)
            with self.assertRaises(errors.OperationFailure) as cm:
                with client.start_session() as s:
                    with s.start_transaction():
                        col.insert_one({'eid': 3}, session=s)
            self.assertEqual(cm.exception.code, 20)
        finally:
            self.assertEqual(server.stop(), 0)


class PersistenceTests(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.tmp.name, 'dev.bson')

    def tearDown(self):
        self.tmp.cleanup()

    def saved_ids(self):
        """_ids in the data file (written atomically, so always complete)."""
        if not os.path.exists(self.path):
            return []
        with open(self.path, 'rb') as f:
            return [d['_id'] for d in bson.decode_file_iter(f) if '_id' in d]

    def test_data_survives_restart_exactly(self):
        original = SON([
            ('_id', 1), ('when', datetime.datetime(2024, 1, 2, 3, 4, 5, 678000)),
            ('i32', 7), ('i64', Int64(2 ** 40)), ('i64small', Int64(5)), ('f', 1.5),
            ('fwhole', 2.0), ('dec', Decimal128('1.10')),
            ('oid', ObjectId('65a1b2c3d4e5f60718293a4b')),
            ('nested', SON([('a', [1, SON([('b', Int64(2))])])])),
            ('bin', Binary(b'\x00\x01', 0)),
            ('uuid4', Binary(b'0123456789abcdef', 4)), ('uuid3', Binary(b'fedcba9876543210', 3))])
        server = Server('--data', self.path)
        try:
            c = server.client()
            col = c.persist.items
            col.insert_one(original)
            col.create_index([('k', 1), ('j', 1)], unique=True, name='k_j')
            col.create_index('when', expireAfterSeconds=10 ** 9, name='when_ttl')
            c.other.stuff.insert_one({'_id': 'x'})
            deadline = time.monotonic() + 10
            while 'x' not in self.saved_ids() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertEqual(sorted(self.saved_ids(), key=str), [1, 'x'],
                             'debounced save did not happen')
            col.insert_one({'_id': 2, 'k': 1, 'j': 1})    # saved by SIGTERM, not by debounce
        finally:
            self.assertEqual(server.stop(signal.SIGTERM), 0)

        server = Server('--data', self.path)
        try:
            c = server.client()
            raw = c.persist.items.with_options(codec_options=CodecOptions(
                document_class=RawBSONDocument, uuid_representation=UUID_UNSPECIFIED))
            self.assertEqual(raw.find_one({'_id': 1}).raw, bson.encode(original))
            self.assertEqual(c.persist.items.find_one({'_id': 2}), {'_id': 2, 'k': 1, 'j': 1})
            self.assertEqual(c.other.stuff.find_one(), {'_id': 'x'})
            info = {i['name']: i for i in c.persist.items.list_indexes()}
            self.assertTrue(info['k_j']['unique'])
            self.assertEqual(info['when_ttl']['expireAfterSeconds'], 10 ** 9)
            with self.assertRaises(errors.DuplicateKeyError):
                c.persist.items.insert_one({'k': 1, 'j': 1})
            c.persist.items.delete_one({'_id': 2})
        finally:
            self.assertEqual(server.stop(signal.SIGINT), 0)

        server = Server('--data', self.path)
        try:
            c = server.client()
            self.assertEqual(sorted(d['_id'] for d in c.persist.items.find()), [1])
        finally:
            self.assertEqual(server.stop(), 0)

    def test_unwritable_data_path_fails_fast(self):
        blocker = os.path.join(self.tmp.name, 'file')
        open(blocker, 'w').close()
        proc = subprocess.run([SCRIPT, '--port', '0', '--quiet', '--data',
                               os.path.join(blocker, 'sub', 'd.bson')],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertNotEqual(proc.returncode, 0)
        self.assertEqual(proc.stdout, b'')


class LifecycleTests(unittest.TestCase):

    def test_ttl_monitor_removes_expired_documents(self):
        server = Server('--ttl-interval', '0.3')
        try:
            col = server.client().ttl.sessions
            col.create_index('at', expireAfterSeconds=60)
            now = datetime.datetime.utcnow()
            col.insert_many([{'_id': 'old', 'at': now - datetime.timedelta(seconds=120)},
                             {'_id': 'new', 'at': now},
                             {'_id': 'nodate', 'at': 'yesterday'},
                             {'_id': 'missing'}])
            deadline = time.monotonic() + 10
            while col.find_one({'_id': 'old'}) and time.monotonic() < deadline:
                time.sleep(0.1)
            self.assertEqual(sorted(d['_id'] for d in col.find()), ['missing', 'new', 'nodate'])
        finally:
            self.assertEqual(server.stop(), 0)

    def test_sigterm_exits_promptly_and_cleanly(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'd.bson')
            server = Server('--data', path)
            client = server.client()
            client.x.y.insert_many([{'i': i} for i in range(1000)])
            t0 = time.monotonic()
            rc = server.stop(signal.SIGTERM)
            elapsed = time.monotonic() - t0
            self.assertEqual(rc, 0)
            self.assertLess(elapsed, 5.0)
            self.assertTrue(os.path.exists(path))
            self.assertEqual([f for f in os.listdir(tmp) if '.tmp' in f], [])


if __name__ == '__main__':
    unittest.main()


class RefuseTests(unittest.TestCase):
    """--refuse and devMongoRefuse: a chosen document is refused for good (code 121)."""

    def test_refused_document_alone_fails_and_rules_can_be_replaced(self):
        server = Server('--refuse', 'events:name=bad')
        try:
            db = server.client()['t_refuse']
            with self.assertRaises(errors.BulkWriteError) as ctx:
                db.events.insert_many([{'name': 'a'}, {'name': 'bad'}, {'name': 'b'}], ordered=False)
            details = ctx.exception.details
            self.assertEqual(details['nInserted'], 2)
            self.assertEqual([(e['index'], e['code']) for e in details['writeErrors']], [(1, 121)])
            db.other.insert_one({'name': 'bad'})          # other collections are not affected
            self.assertEqual(db.command({'devMongoRefuse': []})['rules'], 0)
            db.events.insert_one({'name': 'bad'})
            self.assertEqual(db.events.count_documents({}), 3)
        finally:
            self.assertEqual(server.stop(), 0)


class DelayTests(unittest.TestCase):
    """--delay COLL:MS: slow reads on COLL, others not held up; maxTimeMS is honoured (code 50)."""

    def test_delayed_reads_honour_max_time_ms(self):
        server = Server('--delay', 'slow:400')
        try:
            db = server.client()['t_delay']
            db.slow.insert_one({'a': 1})
            db.fast.insert_one({'a': 1})
            started = time.monotonic()
            self.assertEqual(len(list(db.slow.find({}))), 1)
            self.assertGreaterEqual(time.monotonic() - started, 0.4)
            started = time.monotonic()
            self.assertEqual(len(list(db.fast.find({}))), 1)
            self.assertLess(time.monotonic() - started, 0.4)
            with self.assertRaises(errors.ExecutionTimeout) as ctx:
                list(db.slow.find({}).max_time_ms(100))
            self.assertEqual(ctx.exception.code, 50)
        finally:
            self.assertEqual(server.stop(), 0)


# ---------------------------------------------------------------------------
# Fail points: configureFailPoint (failCommand, devMongoWriteError,
# devMongoUpsertRace) and devMongoRunTTLMonitor
# ---------------------------------------------------------------------------

WCE_TIMEOUT = SON([('code', 64), ('codeName', 'WriteConcernFailed'),
                   ('errmsg', 'waiting for replication timed out'),
                   ('errInfo', {'wtimeout': True})])


def raw_command(sock, db, cmd):
    """One OP_MSG over a plain socket (no handshake, no driver retries): the reply, or None
    when the server closed the connection without replying."""
    doc = SON(list(cmd.items()) + [('$db', db)])
    body = struct.pack('<I', 0) + b'\x00' + bson.encode(doc)
    sock.sendall(struct.pack('<iiii', 16 + len(body), 1, 0, 2013) + body)
    header = b''
    while len(header) < 16:
        chunk = sock.recv(16 - len(header))
        if not chunk:
            return None
        header += chunk
    length = struct.unpack('<i', header[:4])[0]
    rest = b''
    while len(rest) < length - 16:
        chunk = sock.recv(length - 16 - len(rest))
        if not chunk:
            return None
        rest += chunk
    return bson.decode(rest[5:])


class FailPointTestCase(unittest.TestCase):
    """One server per class; every test starts and ends with all fail points off."""

    server_args = ()

    @classmethod
    def setUpClass(cls):
        cls.server = Server(*cls.server_args)
        cls.log = CommandLog()
        cls.client = cls.server.client(event_listeners=[cls.log])
        cls.admin = cls.client.admin

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def setUp(self):
        self.clear()
        self.sockets = []

    def tearDown(self):
        for s in self.sockets:
            s.close()
        self.clear()

    def clear(self):
        for name in ('failCommand', 'devMongoWriteError', 'devMongoUpsertRace'):
            self.admin.command({'configureFailPoint': name, 'mode': 'off'})

    def configure(self, name, mode, **data):
        return self.admin.command(SON([('configureFailPoint', name), ('mode', mode),
                                       ('data', data)]))

    def sock(self):
        s = socket.create_connection(('127.0.0.1', self.server.port), timeout=10)
        self.sockets.append(s)
        return s


class FailCommandTests(FailPointTestCase):

    def test_times_fires_on_the_next_n_then_turns_itself_off(self):
        coll = self.client.fc_times.events
        # (Codes that are not "not primary" ones here: those make pymongo rediscover the
        # server, which takes half a second.)
        before = self.configure('failCommand', {'times': 2}, failCommands=['insert'],
                                errorCode=262)['count']
        for _ in range(2):
            with self.assertRaises(errors.PyMongoError) as ctx:
                coll.insert_one({'a': 1})
            self.assertEqual(ctx.exception.details['code'], 262)
            self.assertEqual(ctx.exception.details['codeName'], 'ExceededTimeLimit')
            self.assertEqual(ctx.exception.details['errmsg'],
                             "Failing command via 'failCommand' failpoint")
        coll.insert_one({'a': 1})
        self.assertEqual(coll.count_documents({}), 1)       # the failed two wrote nothing
        points = self.admin.command({'devMongoFailPoints': 1})['failPoints']
        self.assertEqual(points[0]['mode'], 'off')
        # The reply to configureFailPoint counts how often it fired so far (since start).
        self.assertEqual(self.admin.command({'configureFailPoint': 'failCommand',
                                             'mode': 'off'})['count'] - before, 2)

    def test_skip_lets_n_pass_then_fires_always(self):
        coll = self.client.fc_skip.events
        self.configure('failCommand', {'skip': 2}, failCommands=['insert'], errorCode=121)
        coll.insert_one({'i': 1})
        coll.insert_one({'i': 2})
        for i in range(3):
            with self.assertRaises(errors.PyMongoError) as ctx:
                coll.insert_one({'i': 3 + i})
            self.assertEqual(ctx.exception.details['codeName'], 'DocumentValidationFailure')
        self.assertEqual(coll.count_documents({}), 2)

    def test_always_on_until_off_and_other_commands_untouched(self):
        coll = self.client.fc_always.events
        coll.insert_one({'a': 1})
        self.configure('failCommand', 'alwaysOn', failCommands=['find', 'count'], errorCode=2)
        for _ in range(3):
            with self.assertRaises(errors.OperationFailure) as ctx:
                coll.find_one({})
            self.assertEqual(ctx.exception.code, 2)
        coll.insert_one({'a': 2})                           # not listed: goes on
        with self.assertRaises(errors.OperationFailure):
            self.client.fc_always.command('count', 'events')
        self.admin.command({'configureFailPoint': 'failCommand', 'mode': 'off'})
        self.assertEqual(len(list(coll.find({}))), 2)

    def test_code_names_and_error_labels(self):
        s = self.sock()
        for code, name in [(2, 'BadValue'), (6, 'HostUnreachable'), (7, 'HostNotFound'),
                           (11600, 'InterruptedAtShutdown'), (10107, 'NotWritablePrimary'),
                           (91, 'ShutdownInProgress'), (189, 'PrimarySteppedDown'),
                           (50, 'MaxTimeMSExpired'), (11000, 'DuplicateKey'),
                           (64, 'WriteConcernFailed'), (100, 'UnsatisfiableWriteConcern'),
                           (12345, 'Location12345')]:
            self.configure('failCommand', {'times': 1}, failCommands=['ping'], errorCode=code,
                      errorLabels=['RetryableWriteError', 'Custom'])
            reply = raw_command(s, 'x', {'ping': 1})
            self.assertEqual((reply['ok'], reply['code'], reply['codeName']), (0.0, code, name))
            self.assertEqual(reply['errorLabels'], ['RetryableWriteError', 'Custom'])
        self.assertEqual(raw_command(s, 'x', {'ping': 1})['ok'], 1.0)
        # Without errorLabels, a standalone adds none (no retryable writes there).
        self.configure('failCommand', {'times': 1}, failCommands=['ping'], errorCode=91)
        self.assertNotIn('errorLabels', raw_command(s, 'x', {'ping': 1}))

    def test_hello_and_is_master_match_case_insensitively(self):
        s = self.sock()
        self.configure('failCommand', {'times': 3}, failCommands=['isMaster', 'HELLO'],
                       errorCode=91)
        for name in ('ismaster', 'isMaster', 'hello'):
            self.assertEqual(raw_command(s, 'admin', {name: 1}).get('code'), 91, name)
        self.assertEqual(raw_command(s, 'admin', {'hello': 1})['ok'], 1.0)

    def test_app_name_scopes_to_that_client(self):
        victim, other = self.sock(), self.sock()
        for s, app in ((victim, 'victim'), (other, 'other')):
            raw_command(s, 'admin', {'hello': 1, 'client': {'application': {'name': app}}})
        self.configure('failCommand', 'alwaysOn', failCommands=['ping'], errorCode=6,
                       appName='victim')
        self.assertEqual(raw_command(victim, 'x', {'ping': 1}).get('code'), 6)
        self.assertEqual(raw_command(other, 'x', {'ping': 1})['ok'], 1.0)
        self.assertEqual(raw_command(self.sock(), 'x', {'ping': 1})['ok'], 1.0)  # no hello

    def test_namespace_scopes_to_one_collection(self):
        db = self.client.fc_ns
        self.configure('failCommand', 'alwaysOn', failCommands=['insert'], errorCode=2,
                       namespace='fc_ns.bad')
        db.good.insert_one({'a': 1})
        with self.assertRaises(errors.PyMongoError):
            db.bad.insert_one({'a': 1})

    def test_write_concern_error_is_applied_then_reported(self):
        coll = self.client.fc_wce.events
        before = self.configure('failCommand', 'alwaysOn',
                                failCommands=['insert', 'update', 'find'],
                                writeConcernError=WCE_TIMEOUT)['count']
        with self.assertRaises(errors.WriteConcernError) as ctx:
            coll.insert_one({'_id': 1, 'n': 0})
        self.assertEqual(ctx.exception.code, 64)
        self.assertEqual(ctx.exception.details['errInfo'], {'wtimeout': True})
        with self.assertRaises(errors.WriteConcernError):
            coll.update_one({'_id': 1}, {'$inc': {'n': 1}})
        # find takes no write concern: not failed, the fail point not counted.
        self.assertEqual(coll.find_one({'_id': 1}), {'_id': 1, 'n': 1})
        reply = raw_command(self.sock(), 'fc_wce', SON([
            ('insert', 'events'), ('documents', [{'_id': 2}])]))
        self.assertEqual(reply['ok'], 1.0)
        self.assertEqual(reply['n'], 1)
        self.assertEqual(reply['writeConcernError'], WCE_TIMEOUT)
        self.assertEqual(coll.count_documents({}), 2)       # both applied
        self.assertEqual(self.admin.command({'configureFailPoint': 'failCommand',
                                             'mode': 'off'})['count'] - before, 3)

    def test_block_connection_does_not_block_other_connections(self):
        coll = self.client.fc_block.events
        coll.insert_one({'a': 1})
        self.configure('failCommand', {'times': 1}, failCommands=['find'], blockConnection=True,
                       blockTimeMS=600)
        result = {}

        def blocked():
            t0 = time.monotonic()
            result['docs'] = list(self.server.client().fc_block.events.find({}))
            result['elapsed'] = time.monotonic() - t0
        t = threading.Thread(target=blocked)
        t.start()
        time.sleep(0.15)
        t0 = time.monotonic()
        other = self.server.client().fc_block.events
        other.insert_one({'a': 2})
        self.assertEqual(other.count_documents({}), 2)
        self.assertLess(time.monotonic() - t0, 0.5)
        self.assertTrue(t.is_alive())                        # still waiting meanwhile
        t.join(10)
        self.assertGreaterEqual(result['elapsed'], 0.55)
        self.assertEqual(len(result['docs']), 2)            # then ran (after the insert)

    def test_block_connection_then_error_code(self):
        self.configure('failCommand', {'times': 1}, failCommands=['ping'], blockConnection=True,
                       blockTimeMS=300, errorCode=50)
        t0 = time.monotonic()
        reply = raw_command(self.sock(), 'x', {'ping': 1})
        self.assertGreaterEqual(time.monotonic() - t0, 0.29)
        self.assertEqual(reply['codeName'], 'MaxTimeMSExpired')

    def test_close_connection_sends_no_reply_and_runs_nothing(self):
        s = self.sock()
        self.configure('failCommand', {'times': 1}, failCommands=['insert'], closeConnection=True)
        self.assertIsNone(raw_command(s, 'fc_close', SON([
            ('insert', 'events'), ('documents', [{'_id': 1}])])))
        self.assertEqual(self.client.fc_close.events.count_documents({}), 0)
        self.assertEqual(raw_command(self.sock(), 'x', {'ping': 1})['ok'], 1.0)
        # Through a driver: a network error (pymongo retries reads once, not standalone writes).
        self.configure('failCommand', {'times': 1}, failCommands=['insert'], closeConnection=True)
        with self.assertRaises(errors.AutoReconnect):
            self.client.fc_close.events.insert_one({'_id': 2})
        self.client.fc_close.events.insert_one({'_id': 3})

    def test_configure_fail_point_is_checked_like_mongod(self):
        with self.assertRaises(errors.OperationFailure) as ctx:
            self.client.other.command({'configureFailPoint': 'failCommand', 'mode': 'off'})
        self.assertEqual(ctx.exception.code, 13)
        for mode, data in [('sometimes', {'failCommands': ['ping']}),
                           ({'times': -1}, {'failCommands': ['ping']}),
                           ('alwaysOn', {'errorCode': 2}),
                           ('alwaysOn', {'failCommands': 'ping'}),
                           ('alwaysOn', {'failCommands': ['ping'], 'blockConnection': True})]:
            with self.assertRaises(errors.OperationFailure, msg=(mode, data)) as ctx:
                self.configure('failCommand', mode, **data)
            self.assertIn(ctx.exception.code, (2, 14))
        with self.assertRaises(errors.OperationFailure):
            self.configure('noSuchFailPoint', 'alwaysOn')
        self.assertEqual(self.admin.command({'devMongoFailPoints': 1})['failPoints'][0]['mode'],
                         'off')                         # a refused configuration changes nothing
        # configureFailPoint itself is never failed, so a test can always get out again.
        self.configure('failCommand', 'alwaysOn', failCommands=['configureFailPoint', 'ping'],
                       closeConnection=True)
        self.admin.command({'configureFailPoint': 'failCommand', 'mode': 'off'})
        self.client.admin.command('ping')


class FailCommandReplicaSetTests(FailPointTestCase):
    """In a replica set, a retryable write's failure carries RetryableWriteError as mongod's
    does, and the driver retries it once."""

    server_args = ('--replset', 'rs0')

    @classmethod
    def setUpClass(cls):
        cls.server = Server(*cls.server_args)
        cls.log = CommandLog()
        cls.client = cls.server.client('?replicaSet=rs0&w=majority', event_listeners=[cls.log])
        cls.admin = cls.client.admin

    def test_server_labels_retryable_errors_and_the_driver_retries(self):
        coll = self.client.rs_fc.events
        del self.log.commands[:]
        # 262 ExceededTimeLimit: retryable, and no rediscovery (a "not primary" code such as
        # 189 works the same, half a second slower in pymongo).
        self.configure('failCommand', {'times': 1}, failCommands=['insert'], errorCode=262)
        coll.insert_one({'_id': 1})                         # failed once, retried, stored once
        self.assertEqual(self.log.names().count('insert'), 2)
        self.assertEqual(coll.count_documents({}), 1)
        # errorLabels given (even empty) replace the server's own: no label, no retry.
        self.configure('failCommand', {'times': 1}, failCommands=['insert'], errorCode=262,
                       errorLabels=[])
        with self.assertRaises(errors.PyMongoError) as ctx:
            coll.insert_one({'_id': 2})
        self.assertFalse(ctx.exception.has_error_label('RetryableWriteError'))
        self.assertEqual(coll.count_documents({}), 1)
        # A code mongod does not retry: no label either.
        self.configure('failCommand', {'times': 1}, failCommands=['insert'], errorCode=2)
        with self.assertRaises(errors.OperationFailure):
            coll.insert_one({'_id': 3})

    def test_write_concern_error_on_a_retried_write_keeps_the_stored_reply(self):
        # Raw, because pymongo 3.11 reads errorLabels from inside writeConcernError, where
        # mongod 4.4+ (and libmongoc) have them at the top level of the reply.
        self.configure('failCommand', {'times': 1}, failCommands=['insert'],
                       writeConcernError=SON([('code', 91), ('errmsg', 'shutting down')]))
        s = self.sock()
        cmd = SON([('insert', 'wce'), ('documents', [{'_id': 'x'}]),
                   ('lsid', {'id': Binary(os.urandom(16), 4)}), ('txnNumber', Int64(1))])
        reply = raw_command(s, 'rs_fc', cmd)
        self.assertEqual((reply['ok'], reply['n']), (1.0, 1))
        self.assertEqual(reply['writeConcernError']['code'], 91)
        self.assertEqual(reply['errorLabels'], ['RetryableWriteError'])   # added by the server
        reply = raw_command(s, 'rs_fc', cmd)               # the retry: stored reply, no WCE
        self.assertEqual((reply['ok'], reply['n']), (1.0, 1))
        self.assertNotIn('writeConcernError', reply)
        self.assertEqual(self.client.rs_fc.wce.count_documents({}), 1)


class WriteErrorTests(FailPointTestCase):
    """devMongoWriteError: one document (or statement) of a batch refused with a chosen code."""

    def test_unordered_insert_refuses_matching_documents_and_stores_the_rest(self):
        coll = self.client.we.telemetry_events
        other = self.client.we.other
        self.configure('devMongoWriteError', 'alwaysOn', collection='telemetry_events',
                       commands=['insert'], match={'esp32_name': 'lab-1'}, code=999,
                       errmsg='weird server error')
        docs = [{'esp32_name': n, 'i': i} for i, n in enumerate(['a', 'lab-1', 'b', 'lab-1'])]
        with self.assertRaises(errors.BulkWriteError) as ctx:
            coll.insert_many(docs, ordered=False)
        d = ctx.exception.details
        self.assertEqual(d['nInserted'], 2)
        self.assertEqual([(e['index'], e['code'], e['errmsg']) for e in d['writeErrors']],
                         [(1, 999, 'weird server error'), (3, 999, 'weird server error')])
        self.assertEqual(sorted(x['i'] for x in coll.find()), [0, 2])
        other.insert_one({'esp32_name': 'lab-1'})           # another collection: untouched

    def test_ordered_insert_stops_at_the_first(self):
        coll = self.client.we.ordered
        self.configure('devMongoWriteError', 'alwaysOn', match={'k': 1}, code=11000)
        with self.assertRaises(errors.BulkWriteError) as ctx:
            coll.insert_many([{'k': 0}, {'k': 1}, {'k': 2}], ordered=True)
        d = ctx.exception.details
        self.assertEqual(d['nInserted'], 1)
        self.assertEqual([e['index'] for e in d['writeErrors']], [1])
        self.assertTrue(d['writeErrors'][0]['errmsg'].startswith('E11000 duplicate key error'))

    def test_each_matching_document_consumes_one_time(self):
        coll = self.client.we.times
        self.configure('devMongoWriteError', {'times': 2}, code=121)          # every document
        with self.assertRaises(errors.BulkWriteError) as ctx:
            coll.insert_many([{'i': i} for i in range(5)], ordered=False)
        self.assertEqual([e['index'] for e in ctx.exception.details['writeErrors']], [0, 1])
        coll.insert_one({'i': 9})
        self.assertEqual(coll.count_documents({}), 4)
        self.configure('devMongoWriteError', {'skip': 3}, code=121)
        with self.assertRaises(errors.BulkWriteError) as ctx:
            coll.insert_many([{'i': i} for i in range(5)], ordered=False)
        self.assertEqual([e['index'] for e in ctx.exception.details['writeErrors']], [3, 4])

    def test_update_statements_match_the_filter_or_the_would_be_document(self):
        coll = self.client.we.upd
        coll.insert_many([{'_id': 1, 'dev': 'lab-1', 'n': 0}, {'_id': 2, 'dev': 'b', 'n': 0}])
        self.configure('devMongoWriteError', 'alwaysOn', collection='upd', commands=['update'],
                       match={'dev': 'lab-1'}, code=999)
        ops = [UpdateOne({'_id': 1}, {'$inc': {'n': 1}}),               # the stored document
               UpdateOne({'_id': 2}, {'$inc': {'n': 1}}),
               UpdateOne({'_id': 3}, {'$setOnInsert': {'dev': 'lab-1'}}, upsert=True),
               UpdateOne({'dev': 'lab-1', 'x': 1}, {'$set': {'y': 1}}),  # the filter
               UpdateOne({'_id': 4}, {'$set': {'dev': 'c'}}, upsert=True)]
        with self.assertRaises(errors.BulkWriteError) as ctx:
            coll.bulk_write(ops, ordered=False)
        d = ctx.exception.details
        self.assertEqual([e['index'] for e in d['writeErrors']], [0, 2, 3])
        self.assertEqual((d['nMatched'], d['nUpserted']), (1, 1))
        self.assertEqual(sorted((x['_id'], x.get('n')) for x in coll.find()),
                         [(1, 0), (2, 1), (4, None)])
        with self.assertRaises(errors.BulkWriteError) as ctx:                # ordered
            coll.bulk_write(ops, ordered=True)
        self.assertEqual([e['index'] for e in ctx.exception.details['writeErrors']], [0])

    def test_delete_and_find_and_modify(self):
        coll = self.client.we.del_fam
        coll.insert_many([{'_id': 1, 'dev': 'lab-1'}, {'_id': 2, 'dev': 'b'}])
        self.configure('devMongoWriteError', 'alwaysOn', match={'dev': 'lab-1'}, code=999)
        with self.assertRaises(errors.WriteError):
            coll.delete_many({})                             # would delete lab-1: refused
        with self.assertRaises(errors.OperationFailure) as ctx:
            coll.find_one_and_update({'_id': 1}, {'$set': {'z': 1}})
        self.assertEqual(ctx.exception.code, 999)
        coll.find_one_and_update({'_id': 2}, {'$set': {'z': 1}})
        coll.delete_one({'_id': 2})
        self.assertEqual([x['_id'] for x in coll.find()], [1])


class UpsertRaceTests(FailPointTestCase):
    """Two upserts with one filter, both missing: what mongod can do, on purpose."""

    def test_concurrent_upserts_are_serialized_today(self):
        # dev-mongo holds its store lock across an upsert's match and insert: without the fail
        # point, concurrent identical upserts never race (mongod can: see the tests below).
        coll = self.client.race.serial
        clients = [self.server.client() for _ in range(8)]
        barrier = threading.Barrier(len(clients))

        def upsert(c):
            barrier.wait()
            for _ in range(50):
                c.race.serial.update_one({'k': 'a'}, {'$inc': {'n': 1}}, upsert=True)
        threads = [threading.Thread(target=upsert, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        docs = list(coll.find({}))
        self.assertEqual(len(docs), 1)
        self.assertEqual(docs[0]['n'], 400)

    def test_without_a_unique_index_both_insert(self):
        coll = self.client.race.nounique
        self.configure('devMongoUpsertRace', {'times': 1}, collection='nounique')
        r = coll.update_one({'k': 'a'}, {'$inc': {'n': 1}}, upsert=True)
        self.assertIsNotNone(r.upserted_id)
        self.assertEqual(sorted(d['n'] for d in coll.find({'k': 'a'})), [1, 1])

    def test_with_a_unique_index_on_the_filter_mongod_retries_as_an_update(self):
        coll = self.client.race.retried
        coll.create_index('k', unique=True)
        self.configure('devMongoUpsertRace', {'times': 1}, match={'k': 'a'})
        r = coll.update_one({'k': 'a'}, {'$inc': {'n': 1}}, upsert=True)
        self.assertIsNone(r.upserted_id)
        self.assertEqual((r.matched_count, r.modified_count), (1, 1))
        self.assertEqual([d['n'] for d in coll.find({'k': 'a'})], [2])       # both counted
        doc = coll.find_one_and_update({'k': 'b'}, {'$inc': {'n': 1}}, upsert=True,
                                       return_document=ReturnDocument.AFTER)
        self.assertEqual(doc['n'], 1)                       # times: 1 was used up

    def test_otherwise_the_loser_gets_e11000(self):
        coll = self.client.race.lost
        coll.create_index('k', unique=True)
        self.configure('devMongoUpsertRace', 'alwaysOn', collection='lost')
        with self.assertRaises(errors.DuplicateKeyError):        # filter has more fields
            coll.update_one({'k': 'a', 'open': True}, {'$set': {'n': 1}}, upsert=True)
        self.assertEqual(coll.count_documents({'k': 'a'}), 1)    # the winner's
        with self.assertRaises(errors.DuplicateKeyError):        # findAndModify alike
            coll.find_one_and_update({'k': 'b', 'open': True}, {'$set': {'n': 1}}, upsert=True)
        # An _id given in the filter: the winner has it too.
        with self.assertRaises(errors.DuplicateKeyError):
            coll.update_one({'_id': 'x', 'k': 'c'}, {'$set': {'n': 1}}, upsert=True)
        coll.update_one({'_id': 'y'}, {'$set': {'k': 'd'}}, upsert=True)  # {_id} alone: retried
        self.assertEqual(coll.count_documents({'_id': 'y'}), 1)


class TTLPassTests(unittest.TestCase):

    def test_run_ttl_monitor_now_and_as_of_a_given_time(self):
        server = Server('--ttl-interval', '3600')
        try:
            client = server.client()
            col = client.ttl_pass.events
            col.create_index('received_at', expireAfterSeconds=730 * 86400)
            col.create_index('at', expireAfterSeconds=60,
                             partialFilterExpression={'kind': 'temp'})
            now = datetime.datetime.utcnow().replace(microsecond=0)
            day = datetime.timedelta(days=1)
            col.insert_many([{'_id': 'old', 'received_at': now - 731 * day},
                             {'_id': 'younger', 'received_at': now - 729 * day},
                             {'_id': 'new', 'received_at': now},
                             {'_id': 'nodate', 'received_at': 'long ago'},
                             {'_id': 'kept', 'at': now - day},
                             {'_id': 'temp', 'at': now - day, 'kind': 'temp'}])
            self.assertEqual(client.admin.command({'devMongoRunTTLMonitor': 1})['deleted'], 2)
            self.assertEqual(sorted(d['_id'] for d in col.find()),
                             ['kept', 'new', 'nodate', 'younger'])
            r = client.admin.command(SON([('devMongoRunTTLMonitor', 1), ('now', now + 2 * day)]))
            self.assertEqual(r['deleted'], 1)
            self.assertEqual(sorted(d['_id'] for d in col.find()), ['kept', 'new', 'nodate'])
            with self.assertRaises(errors.OperationFailure):
                client.admin.command(SON([('devMongoRunTTLMonitor', 1), ('now', 'tomorrow')]))
        finally:
            self.assertEqual(server.stop(), 0)
