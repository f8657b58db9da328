-- Schema changes and the writer's own objects: where a statement runs is learned again after a
-- schema changes (a view redefined to read connection state, a table replaced by a TEMP one or
-- one in an ATTACHed database, a change made by another process), and a TEMP table or view
-- that shadows a main table is what every statement reads, as on one connection, where temp is
-- searched first (SQLite's lang_naming.html).
local sqlite = require "pasyn_sqlite"
local support = require "support"

local scalar = support.scalar

-- The distinct answers of `sql` from n coroutines at once (they spread over the readers), in
-- order.
local function answers(conn, sql, n)
    local list = {}
    for v in pairs(support.counts_everywhere(conn, sql, n)) do
        list[#list + 1] = v
    end
    table.sort(list, function(a, b) return tostring(a) < tostring(b) end)
    return list
end

describe("schema changes", function()
    local path, cleanup, conn
    before_each(function()
        path, cleanup = support.tmpdb()
        conn = sqlite.connect(path, { readers = 3 })
    end)
    after_each(function()
        conn:close()
        cleanup()
    end)

    it("a view redefined to call total_changes() answers the writer's count, though its SQL "
       .. "was a read before", function()
        conn:execute("CREATE TABLE a (x)")
        conn:execute("CREATE VIEW v AS SELECT 0 AS n")
        assert.same({ 0 }, answers(conn, "SELECT n FROM v", 20))
        conn:execute("INSERT INTO a VALUES (1), (2)")
        conn:execute("DROP VIEW v")
        conn:execute("CREATE VIEW v AS SELECT total_changes() AS n")
        assert.same({ 2 }, answers(conn, "SELECT n FROM v", 20))
    end)

    it("a table replaced by a view of last_insert_rowid() answers the writer's rowid", function()
        conn:execute("CREATE TABLE a (x)")
        conn:execute("CREATE TABLE w (x)")
        assert.same({ 0 }, answers(conn, "SELECT count(*) FROM w", 10))
        conn:execute("DROP TABLE w")
        conn:execute("CREATE VIEW w AS SELECT last_insert_rowid() AS x")
        conn:execute("INSERT INTO a VALUES (1), (2), (3)")
        assert.same({ 3 }, answers(conn, "SELECT x FROM w", 10))
    end)

    it("a view that another process redefines is learned again when SQLite re-prepares it",
       function()
        conn:execute("CREATE TABLE a (x)")
        conn:execute("CREATE VIEW v AS SELECT 0 AS n")
        assert.same({ 0 }, answers(conn, "SELECT n FROM v", 20))
        local other = sqlite.connect(path, { readers = 0 })
        other:execute("DROP VIEW v")
        other:execute("CREATE VIEW v AS SELECT changes() AS n")
        other:close()
        conn:execute("INSERT INTO a VALUES (1), (2), (3), (4)")
        assert.same({ 4 }, answers(conn, "SELECT n FROM v", 20))
    end)

    it("a TEMP table that shadows a main table is what every read finds, count(*) included",
       function()
        conn:execute("CREATE TABLE t (x)")
        conn:execute("INSERT INTO t VALUES ('main')")
        assert.same({ "main" }, answers(conn, "SELECT x FROM t", 10))
        conn:execute("CREATE TEMP TABLE t (x)")
        conn:execute("INSERT INTO t VALUES ('temp'), ('temp')")
        assert.same({ "temp" }, answers(conn, "SELECT x FROM t", 10))
        assert.same({ 2 }, answers(conn, "SELECT count(*) FROM t", 10))
        assert.same({ "main" }, answers(conn, "SELECT x FROM main.t", 10))
        conn:execute("DROP TABLE temp.t")
        assert.same({ "main" }, answers(conn, "SELECT x FROM t", 10))
    end)

    it("a TEMP view that shadows a main table, and the TEMP schema table, read as on the writer",
       function()
        conn:execute("CREATE TABLE u (x)")
        conn:execute("INSERT INTO u VALUES ('main')")
        assert.same({ "main" }, answers(conn, "SELECT * FROM u", 10))
        conn:execute("CREATE TEMP VIEW u AS SELECT 'temp view' AS x")
        assert.same({ "temp view" }, answers(conn, "SELECT * FROM u", 10))
        assert.same({ 1 }, answers(conn, "SELECT count(*) FROM sqlite_temp_schema", 10))
        assert.same({ 1 }, answers(conn, "SELECT EXISTS (SELECT 1 FROM sqlite_temp_schema)", 10))
    end)

    it("a table that moved from main into an ATTACHed database is found there", function()
        local aux, remove_aux = support.tmpdb()
        conn:execute("CREATE TABLE z (x)")
        assert.same({ 0 }, answers(conn, "SELECT count(*) FROM z", 10))
        conn:execute("DROP TABLE z")
        conn:execute("ATTACH ? AS aux", aux)
        conn:execute("CREATE TABLE aux.z (x)")
        conn:execute("INSERT INTO z VALUES ('aux')")
        assert.same({ 1 }, answers(conn, "SELECT count(*) FROM z", 10))
        assert.same({ "aux" }, answers(conn, "SELECT * FROM z", 10))
        conn:execute("DETACH aux")
        remove_aux()
    end)

    it("a read of a table that does not exist fails as on one connection", function()
        local err = support.raises("OperationalError", conn.execute, conn, "SELECT * FROM nowhere")
        assert.equal("no such table: nowhere", err.message)
        conn:execute("CREATE TABLE nowhere (x)")
        assert.equal(0, scalar(conn, "SELECT count(*) FROM nowhere"))
    end)
end)

-- With trusted_schema = OFF, SQLite runs in views and triggers only functions that are
-- innocuous (c3ref/c_deterministic.html): changes() and total_changes() are, also as the pool
-- answers them on the writer.
describe("trusted_schema = OFF", function()
    it("allows changes() and total_changes() in a trigger and a view", function()
        local path, cleanup = support.tmpdb()
        local conn = sqlite.connect(path, { pragmas = { trusted_schema = false } })
        conn:execute("CREATE TABLE t (x)")
        conn:execute("CREATE TABLE log (c, tc)")
        conn:execute([[CREATE TRIGGER t_log AFTER INSERT ON t
                       BEGIN INSERT INTO log VALUES (changes(), total_changes()); END]])
        conn:execute("CREATE VIEW v AS SELECT changes() AS c, total_changes() AS tc")
        conn:execute("INSERT INTO t VALUES (1)")
        assert.same({ 0, 0, n = 2 }, conn:execute("SELECT c, tc FROM log"):fetchone())
        assert.same({ 1, 2, n = 2 }, conn:execute("SELECT c, tc FROM v"):fetchone())
        conn:close()
        cleanup()
    end)
end)
