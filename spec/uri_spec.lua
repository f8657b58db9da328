-- URIs: every form that would give each connection of the pool a database of its own
-- (file::memory:, mode=memory, vfs=memdb, an empty path) opens the pool's one private memory
-- database; cache=shared (SQLITE_LOCKED, not retried by busy_timeout) is dropped; nolock=1 and
-- vfs=unix-none (the pool's own connections would corrupt the file) are refused at connect
-- with a ProgrammingError naming the part. The rules themselves are unit-tested in
-- c/test/test_uri.c; here the pool is checked end to end.
local sqlite = require "pasyn_sqlite"
local support = require "support"

local scalar = support.scalar
local counts_everywhere = support.counts_everywhere

local function exists(path)
    local f = io.open(path, "rb")
    if f then
        f:close()
    end
    return f ~= nil
end

describe("URIs", function()
    local MEMORY = {
        "file::memory:",
        "file::memory:?cache=shared",
        "file:shared_mem_name?mode=memory&cache=shared",
        "file:/pasyn_memdb_name?vfs=memdb",
        "file:?cache=shared",
        "file:",
    }
    for _, uri in ipairs(MEMORY) do
        it(uri .. " is one memory database shared by the writer and every reader", function()
            local conn = sqlite.connect(uri, { readers = 3, inline_reads = false }) -- counted on readers
            conn:execute("CREATE TABLE t (x)")
            conn:execute("INSERT INTO t VALUES (1), (2)")
            assert.same({ [1] = 40 }, counts_everywhere(conn,
                "SELECT count(*) FROM sqlite_master WHERE name = 't'", 40))
            assert.same({ [2] = 40 }, counts_everywhere(conn, "SELECT count(*) FROM t", 40))
            assert.is_true(support.readers_sum(conn:stats(), "executed") >= 40)
            assert.equal("wal", scalar(conn, "PRAGMA journal_mode"))
            conn:close()
            assert.is_false(exists("shared_mem_name"))
            local again = sqlite.connect(uri) -- private to its pool, gone at close
            assert.equal(0, scalar(again, "SELECT count(*) FROM sqlite_master"))
            again:close()
        end)
    end

    it("cache=shared on a file is dropped: a read beside an open write transaction is not "
       .. "SQLITE_LOCKED", function()
        local path, cleanup = support.tmpdb()
        local conn = sqlite.connect("file:" .. path .. "?cache=shared", { busy_timeout = 0 })
        conn:execute("CREATE TABLE t (x)")
        conn:execute("INSERT INTO t VALUES (1)")
        local seen = sqlite.run(function()
            conn:execute("BEGIN IMMEDIATE")
            conn:execute("INSERT INTO t VALUES (2)")
            local other = sqlite.spawn(function()
                return scalar(conn, "SELECT count(*) FROM t")
            end):join()
            conn:execute("COMMIT")
            return other
        end)
        assert.equal(1, seen)
        assert.equal(2, scalar(conn, "SELECT count(*) FROM t"))
        conn:close()
        cleanup()
    end)

    for _, part in ipairs({ "nolock=1", "nolock=yes", "vfs=unix-none" }) do
        it(part .. " is refused at connect with a ProgrammingError naming it, creating nothing",
           function()
            local path = support.temp_path()
            local uri = "file:" .. path .. "?" .. part
            local err = support.raises("ProgrammingError", sqlite.connect, uri)
            assert.truthy(err.message:find(part, 1, true), err.message)
            assert.equal(uri, err.database)
            assert.is_false(exists(path))
        end)
    end

    it("a readonly pool opens a mode=rwc URI, and a mode=ro URI refuses writes", function()
        local path, cleanup = support.tmpdb()
        local w = sqlite.connect("file:" .. path .. "?mode=rwc")
        w:execute("CREATE TABLE t (x)")
        w:execute("INSERT INTO t VALUES (1)")
        w:close()
        local ro = sqlite.connect("file:" .. path .. "?mode=rwc", { readonly = true })
        assert.equal(1, scalar(ro, "SELECT count(*) FROM t"))
        ro:close()
        ro = sqlite.connect("file:" .. path .. "?mode=ro")
        assert.equal(1, scalar(ro, "SELECT count(*) FROM t"))
        local err = support.raises("OperationalError", ro.execute, ro, "INSERT INTO t VALUES (2)")
        assert.equal(8, err.code) -- SQLITE_READONLY
        ro:close()
        cleanup()
    end)
end)
