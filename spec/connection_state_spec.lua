-- Connection state read through SQL: last_insert_rowid(), changes(), total_changes() (in a
-- SELECT, a view, a subquery, an INSERT's VALUES) answer as one SQLite connection would, on
-- every pool shape, and cur.lastrowid names the row a statement itself inserted, whatever its
-- rowid. The pool never plants values in that state.
local sqlite = require "pasyn_sqlite"
local support = require "support"

local scalar = support.scalar
local counts_everywhere = support.counts_everywhere

-- Every pool shape the state could be split or planted in.
local SHAPES = {
    { readers = 0, group_commit = true },
    { readers = 1, group_commit = false },
    { readers = 3, group_commit = true },
    { readers = 3, group_commit = false },
}

local function shape_name(o)
    return "readers = " .. o.readers .. ", group_commit = " .. tostring(o.group_commit)
end

-- The whole range of SQLite rowids, as this Lua holds them (LuaJIT: doubles, exact at -2^63).
local MIN_ROWID = math.mininteger or -2 ^ 63

describe("connection state read through SQL", function()
    local conn, path, cleanup
    after_each(function()
        if conn then
            conn:close()
            conn = nil
        end
        if cleanup then
            cleanup()
            cleanup = nil
        end
    end)

    local function open(options)
        path, cleanup = support.tmpdb()
        conn = sqlite.connect(path, options)
        conn:execute("CREATE TABLE p (id INTEGER PRIMARY KEY, x)")
        conn:execute("CREATE TABLE c (pid)")
        return conn
    end

    for _, shape in ipairs(SHAPES) do
        describe(shape_name(shape), function()
            it("INSERT ... VALUES (last_insert_rowid()) stores the row just inserted", function()
                open(shape)
                conn:execute("INSERT INTO p (x) VALUES (1)")
                conn:execute("INSERT INTO c (pid) VALUES (last_insert_rowid())")
                assert.equal(1, scalar(conn, "SELECT pid FROM c"))
            end)

            it("inside BEGIN ... COMMIT, last_insert_rowid() is the transaction's last insert",
               function()
                open(shape)
                conn:execute("BEGIN")
                conn:execute("INSERT INTO p (x) VALUES (1)")
                assert.equal(1, scalar(conn, "SELECT last_insert_rowid()"))
                conn:execute("INSERT INTO c (pid) VALUES (last_insert_rowid())")
                conn:execute("COMMIT")
                assert.equal(1, scalar(conn, "SELECT pid FROM c"))
            end)

            it("after two autocommit inserts: last_insert_rowid() 2, changes() 1, "
               .. "total_changes() 2", function()
                open(shape)
                conn:execute("INSERT INTO p (x) VALUES (1)")
                conn:execute("INSERT INTO p (x) VALUES (2)")
                assert.same({ 2, 1, 2, n = 3 },
                            conn:execute("SELECT last_insert_rowid(), changes(), "
                                         .. "total_changes()"):fetchone())
                assert.equal(2, conn.total_changes)
            end)

            it("answers through a view, a subquery and an upper-case name", function()
                open(shape)
                conn:execute("CREATE VIEW state AS SELECT changes() AS ch, total_changes() AS tot")
                conn:execute("INSERT INTO p (x) VALUES (1), (2), (3)")
                assert.same({ 3, 3, n = 2 }, conn:execute("SELECT ch, tot FROM state"):fetchone())
                assert.equal(2, scalar(conn, "SELECT x FROM p WHERE id = (SELECT CHANGES() - 1)"))
                assert.equal(3, scalar(conn, "SELECT LAST_INSERT_ROWID()"))
            end)

            it("a write seen by another coroutine's SELECT changes()", function()
                open(shape)
                local got = sqlite.run(function()
                    sqlite.spawn(function()
                        conn:execute("UPDATE p SET x = 0")
                        conn:execute("INSERT INTO p (x) VALUES (1), (2)")
                    end):join()
                    return sqlite.spawn(function()
                        return conn:execute("SELECT changes(), last_insert_rowid()"):fetchone()
                    end):join()
                end)
                assert.same({ 2, 2, n = 2 }, got)
            end)
        end)
    end
end)

-- A PRAGMA run through execute reaches the writer alone; settings that change what a read
-- answers must reach the readers too, or the same SELECT answers differently by where it runs.
describe("read settings changed through execute", function()
    local conn, cleanup
    after_each(function()
        conn:close()
        cleanup()
    end)

    it("PRAGMA case_sensitive_like (execute, then executescript) holds on every connection",
       function()
        local path
        path, cleanup = support.tmpdb()
        conn = sqlite.connect(path, { readers = 3, inline_reads = false }) -- counted on readers
        conn:execute("CREATE TABLE t (x)")
        conn:execute("INSERT INTO t VALUES ('a')")
        local like = "SELECT count(*) FROM t WHERE x LIKE 'A'"
        assert.same({ [1] = 30 }, counts_everywhere(conn, like, 30))
        conn:execute("PRAGMA case_sensitive_like = ON")
        assert.same({ [0] = 30 }, counts_everywhere(conn, like, 30))
        assert.is_true(support.readers_sum(conn:stats(), "executed") >= 30)
        conn:executescript("PRAGMA case_sensitive_like = OFF; SELECT 1;")
        assert.same({ [1] = 30 }, counts_everywhere(conn, like, 30))
    end)

    it("PRAGMA reverse_unordered_selects = ON (execute) reverses an unordered SELECT on every "
       .. "connection", function()
        local path
        path, cleanup = support.tmpdb()
        conn = sqlite.connect(path, { readers = 3, inline_reads = false }) -- counted on readers
        conn:execute("CREATE TABLE t (x)")
        for x = 1, 3 do
            conn:execute("INSERT INTO t VALUES (?)", x)
        end
        -- One sqlite3 connection answers "1,2,3", and "3,2,1" after the PRAGMA (3.40.1).
        local unordered = "SELECT group_concat(x) FROM (SELECT x FROM t)"
        assert.same({ ["1,2,3"] = 30 }, counts_everywhere(conn, unordered, 30))
        conn:execute("PRAGMA reverse_unordered_selects = ON")
        local before = support.readers_sum(conn:stats(), "executed")
        assert.same({ ["3,2,1"] = 30 }, counts_everywhere(conn, unordered, 30))
        assert.is_true(support.readers_sum(conn:stats(), "executed") - before >= 30)
    end)
end)

describe("cur.lastrowid", function()
    local conn, path, cleanup
    before_each(function()
        path, cleanup = support.tmpdb()
        conn = sqlite.connect(path)
        conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v UNIQUE)")
    end)
    after_each(function()
        conn:close()
        cleanup()
    end)

    it("is the rowid inserted, also at the ends of the range, and last_insert_rowid() agrees",
       function()
        for _, id in ipairs({ MIN_ROWID, -1, 0, 1 }) do
            local cur = conn:execute("INSERT INTO t (id, v) VALUES (?, ?)", id, "v" .. tostring(id))
            assert.equal(id, cur.lastrowid)
            assert.equal(id, scalar(conn, "SELECT last_insert_rowid()"))
        end
        local cur = conn:execute("INSERT INTO t (id, v) VALUES (9223372036854775807, 'max')")
        assert.equal(scalar(conn, "SELECT max(id) FROM t"), cur.lastrowid)
    end)

    it("is set by a REPLACE that puts back the rowid last inserted", function()
        conn:execute("INSERT INTO t (id, v) VALUES (7, 'a')")
        local cur = conn:execute("INSERT OR REPLACE INTO t (id, v) VALUES (7, 'b')")
        assert.equal(7, cur.lastrowid)
        cur = conn:execute("REPLACE INTO t (id, v) VALUES (7, 'c')")
        assert.equal(7, cur.lastrowid)
    end)

    it("is set by such a REPLACE also after on_change came and went, and after other writes",
       function()
        conn:execute("INSERT INTO t (id, v) VALUES (7, 'a')") -- the writer watches inserts now
        conn:on_change(function() end)
        conn:execute("INSERT INTO t (id, v) VALUES (8, 'b')")
        conn:on_change(nil)
        conn:execute("UPDATE t SET v = 'c' WHERE id = 8")
        conn:execute("DELETE FROM t WHERE id = 8")
        conn:execute("INSERT INTO t (id, v) VALUES (8, 'd')")
        local cur = conn:execute("REPLACE INTO t (id, v) VALUES (8, 'e')")
        assert.equal(8, cur.lastrowid)
        assert.is_nil(conn:execute("UPDATE t SET v = 'f' WHERE id = 8").lastrowid)
        assert.equal(8, conn:execute("INSERT OR REPLACE INTO t (id, v) VALUES (8, 'g')").lastrowid)
    end)

    it("is not set by an upsert that updated, an ignored insert, or a trigger's insert", function()
        conn:execute("CREATE TABLE log (id INTEGER PRIMARY KEY, what)")
        conn:execute([[CREATE TRIGGER t_log AFTER UPDATE ON t
                       BEGIN INSERT INTO log (what) VALUES (new.v); END]])
        assert.equal(1, conn:execute("INSERT INTO t (id, v) VALUES (1, 'a')").lastrowid)
        local upsert = "INSERT INTO t (v) VALUES ('a') ON CONFLICT (v) DO UPDATE SET v = 'a'"
        local cur = conn:execute(upsert)
        assert.equal(1, cur.rowcount)
        assert.is_nil(cur.lastrowid)
        assert.is_nil(conn:execute("INSERT OR IGNORE INTO t (v) VALUES ('a')").lastrowid)
        assert.is_nil(conn:execute("UPDATE t SET v = 'b' WHERE id = 1").lastrowid)
        assert.equal(1, scalar(conn, "SELECT count(*) FROM log WHERE what = 'b'"))
        assert.equal(2, conn:execute("INSERT INTO t (id, v) VALUES (2, 'c')").lastrowid)
    end)

    it("is not set by an insert into a WITHOUT ROWID table", function()
        conn:execute("CREATE TABLE w (k TEXT PRIMARY KEY, v) WITHOUT ROWID")
        local cur = conn:execute("INSERT INTO w (k, v) VALUES ('a', 1)")
        assert.equal(1, cur.rowcount)
        assert.is_nil(cur.lastrowid)
    end)
end)
