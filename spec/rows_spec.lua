-- A cursor's rows (pasyn_sqlite.lua, "A cursor's rows"): a result of at most one row is kept
-- in the cursor as that row itself, with no array around it, and any other result as an
-- array of rows. These specs pin what a user sees of either form, on both paths a statement
-- takes: run at once on the caller's thread (an inline read, whose result core.execute puts
-- straight into the cursor) and waited for on a reader (inline_reads = false). And when a row
-- shape applies: the cursor's row when a row is fetched, as Python's row_factory (README,
-- "Cursors take conn.row when they are created").
local sqlite = require "pasyn_sqlite"
local core = require "pasyn_sqlite.core"
local support = require "support"

local null = sqlite.null
local raises = support.raises

-- A budget long enough that a read counts as short on a slow machine or under a sanitizer
-- (inline_spec.lua).
local BUDGET = 0.05

for _, path in ipairs({ "inline", "reader" }) do
    describe("a cursor's rows (" .. path .. ")", function()
        local db, cleanup, conn

        before_each(function()
            db, cleanup = support.tmpdb()
            conn = sqlite.connect(db, path == "inline" and { inline_budget = BUDGET }
                                      or { inline_reads = false })
            conn:execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB)")
            conn:executemany("INSERT INTO t (id, name, score) VALUES (?, ?, ?)", {
                { 1, "one", 1.5 }, { 2, "two", 2.5 }, { 3, "three", 3.5 },
            })
        end)

        after_each(function()
            if not conn.closed then
                conn:close()
            end
            cleanup()
        end)

        -- target:execute(sql, ...) (target: conn or a cursor of it), a read. Inline, it first
        -- runs the read until the pool runs it inline (the first runs teach the pool that it
        -- is short), and checks that the one it returns ran inline; else it checks that it
        -- ran on a reader.
        local function run(target, sql, ...)
            local function executed()
                local s = conn:stats()
                return s.inline.executed, support.readers_sum(s, "executed")
            end
            if path == "inline" then
                for i = 1, 201 do
                    assert(i <= 200, "never ran inline: " .. sql)
                    local before = executed()
                    conn:execute(sql, ...):fetchall()
                    if executed() > before then
                        break
                    end
                    core.sleep(0.001) -- the reader notes the read's cost after completing it
                end
            end
            local inline0, readers0 = executed()
            local cur = target:execute(sql, ...)
            local inline1, readers1 = executed()
            if path == "inline" then
                assert.equal(inline0 + 1, inline1)
            else
                assert.equal(readers0 + 1, readers1)
            end
            return cur
        end

        local ONE = "SELECT id, name FROM t WHERE id = ?"
        local ALL = "SELECT id, name FROM t ORDER BY id"

        it("a one-row result: fetchone gives the row once, then nil; fetchall then {}", function()
            local cur = run(conn, ONE, 2)
            assert.same({ 2, "two", n = 2 }, cur:fetchone())
            assert.is_nil(cur:fetchone())
            assert.is_nil(cur:fetchone())
            assert.same({}, cur:fetchall())
            assert.same({}, cur:fetchmany(3))
        end)

        it("fetchall of a one-row result is an array of that row, and uses it up", function()
            local cur = run(conn, ONE, 3)
            assert.same({ { 3, "three", n = 2 } }, cur:fetchall())
            assert.same({}, cur:fetchall())
            assert.is_nil(cur:fetchone())
        end)

        it("fetchmany(0) takes nothing from a one-row result; fetchmany(n) then gives the row",
           function()
            local cur = run(conn, ONE, 1)
            assert.same({}, cur:fetchmany(0))
            cur.arraysize = 0
            assert.same({}, cur:fetchmany())
            assert.same({ { 1, "one", n = 2 } }, cur:fetchmany(5))
            assert.same({}, cur:fetchmany(5))
        end)

        it("rows() gives the one row, then ends", function()
            local seen = {}
            for row in run(conn, ONE, 2):rows() do
                seen[#seen + 1] = row
                if #seen > 3 then -- (a bound: a cursor that gives its row again never ends)
                    break
                end
            end
            assert.same({ { 2, "two", n = 2 } }, seen)
        end)

        it("a result of no rows: fetchone nil, fetchall {}, its description there", function()
            local cur = run(conn, ONE, 99)
            assert.equal("name", cur.description[2].name)
            assert.is_nil(cur:fetchone())
            assert.same({}, run(conn, ONE, 99):fetchall())
            assert.same({}, run(conn, ONE, 99):fetchmany(2))
        end)

        it("description read after fetchall is the statement's, the table read before it",
           function()
            local cur = run(conn, ONE, 1)
            local before = cur.description
            assert.same({ { 1, "one", n = 2 } }, cur:fetchall())
            local after = cur.description
            assert.equal(before, after)
            assert.same({ "id", name = "id", decltype = "INTEGER" }, after[1])
            assert.same({ "name", name = "name", decltype = "TEXT" }, after[2])
            local late = run(conn, ONE, 2)
            late:fetchall()
            assert.equal(before, late.description) -- one description per SQL text, shared
            assert.same({ "id", "name" }, { late.description[1][1], late.description[2][1] })
        end)

        it("a description made after the columns changed is the new one, and is kept",
           function()
            local sql = "SELECT * FROM t WHERE id = ?"
            assert.equal(4, #run(conn, sql, 1).description)
            conn:execute("ALTER TABLE t ADD COLUMN extra TEXT DEFAULT 'x'")
            local cur = run(conn, sql, 1)
            assert.same({ 1, "one", 1.5, null, "x", n = 5 }, cur:fetchone())
            local d = cur.description
            assert.equal(5, #d)
            assert.equal("extra", d[5].name)
            assert.equal(d, run(conn, sql, 2).description) -- the new record is kept and shared
        end)

        it("a columns record first made by this path is kept and shared too", function()
            local d0 = run(conn, ONE, 1).description
            -- 600 other SQL texts: the connection drops the records it keeps (at 512), so the
            -- next run of ONE makes a new one
            for i = 1, 600 do
                conn:execute("SELECT " .. i .. " AS x"):fetchall()
            end
            local cur = run(conn, ONE, 1)
            local d = cur.description
            assert.are_not.equal(d0, d)
            assert.same(d0, d)
            assert.equal(d, run(conn, ONE, 2).description)
            assert.same({ 1, "one", n = 2 }, cur:fetchone())
        end)

        it("a cursor executed again before it was fetched gives the new statement's rows",
           function()
            local cur = conn:cursor()
            run(cur, ONE, 1)
            assert.same({ { 2, "two", n = 2 } }, run(cur, ONE, 2):fetchall()) -- one, then one
            run(cur, ONE, 1)
            assert.same({ { 1, "one", n = 2 }, { 2, "two", n = 2 }, { 3, "three", n = 2 } },
                        run(cur, ALL):fetchall()) -- one, then many
            run(cur, ALL)
            assert.same({ 3, "three", n = 2 }, run(cur, ONE, 3):fetchone()) -- many, then one
            assert.is_nil(cur:fetchone())
            run(cur, ONE, 1)
            assert.is_nil(run(cur, ONE, 99):fetchone()) -- one, then none
            run(cur, ONE, 99)
            assert.same({ 2, "two", n = 2 }, run(cur, ONE, 2):fetchone()) -- none, then one
        end)

        it("a read on a cursor after an insert: rowcount -1 again, lastrowid kept", function()
            local cur = conn:cursor()
            cur:execute("INSERT INTO t (id, name) VALUES (7, 'seven')")
            assert.equal(1, cur.rowcount)
            assert.equal(7, cur.lastrowid)
            run(cur, ONE, 7)
            assert.equal(-1, cur.rowcount)
            assert.equal(7, cur.lastrowid)
            assert.same({ 7, "seven", n = 2 }, cur:fetchone())
            cur:execute("UPDATE t SET name = 'SEVEN' WHERE id = 7")
            assert.equal(1, cur.rowcount)
            run(cur, ONE, 7)
            assert.equal(-1, cur.rowcount)
        end)

        it("a cursor closed before it was fetched refuses fetches, and holds no row", function()
            local cur = run(conn, ONE, 1)
            cur:close()
            raises("ProgrammingError", cur.fetchone, cur)
            raises("ProgrammingError", cur.fetchall, cur)
            raises("ProgrammingError", cur.fetchmany, cur, 1)
            cur:close() -- again: nothing
        end)

        it("a row function that raises on a one-row result uses the row up", function()
            local cur = conn:cursor()
            cur.row = function()
                error("no")
            end
            run(cur, ONE, 1)
            assert.has_error(function()
                cur:fetchone()
            end)
            assert.is_nil(cur:fetchone())
            run(cur, ONE, 2)
            assert.has_error(function()
                cur:fetchall()
            end)
            assert.same({}, cur:fetchall())
        end)

        it("the first row keeps every type: a BLOB with NUL bytes, NULL, integers, a float",
           function()
            local blob = "\0\1\2\255\0"
            conn:execute("UPDATE t SET data = ? WHERE id = 1", sqlite.blob(blob))
            local big = math.type and math.maxinteger or 2 ^ 53 -- exact in either
            local small = math.type and math.mininteger or -2 ^ 53
            local cur = run(conn, "SELECT data, NULL, ?, ?, score, name, NULL FROM t WHERE id = ?",
                            big, small, 1)
            local row = cur:fetchone()
            assert.equal(7, row.n)
            assert.equal(7, #row) -- sqlite.null keeps every column, the last one too
            assert.equal(blob, row[1])
            assert.equal(null, row[2])
            assert.equal(big, row[3])
            assert.equal(small, row[4])
            if math.type then
                assert.equal("integer", math.type(row[3]))
                assert.equal("integer", math.type(row[4]))
                assert.equal("float", math.type(row[5]))
            end
            assert.equal(1.5, row[5])
            assert.equal("one", row[6])
            assert.equal(null, row[7])
            assert.is_nil(cur:fetchone())
        end)

        it("named rows of a one-row result", function()
            local cur = conn:cursor()
            cur.row = "named"
            assert.same({ id = 2, name = "two" }, run(cur, ONE, 2):fetchone())
            assert.same({ { id = 3, name = "three" } }, run(cur, ONE, 3):fetchall())
        end)

        describe("when a row shape applies", function()
            it("conn.row set after the cursor was made does not change its rows", function()
                local one, many = run(conn, ONE, 1), run(conn, ALL)
                conn.row = "named"
                assert.same({ 1, "one", n = 2 }, one:fetchone())
                assert.same({ 1, "one", n = 2 }, many:fetchone())
                conn.row = function()
                    return "f"
                end
                assert.same({ { 2, "two", n = 2 }, { 3, "three", n = 2 } }, many:fetchall())
                assert.equal("f", run(conn, ONE, 1):fetchone()) -- a cursor made now takes it
            end)

            it("cur.row set between execute and fetch applies to the rows fetched after it",
               function()
                local cur = run(conn, ONE, 1)
                cur.row = "named"
                assert.same({ id = 1, name = "one" }, cur:fetchone())

                cur = conn:cursor()
                cur.row = "named"
                run(cur, ONE, 2)
                cur.row = "array"
                assert.same({ 2, "two", n = 2 }, cur:fetchone())

                run(cur, ALL) -- arrays, partly fetched, then named
                assert.same({ 1, "one", n = 2 }, cur:fetchone())
                cur.row = "named"
                assert.same({ id = 2, name = "two" }, cur:fetchone())
                cur.row = "array"
                assert.same({ { 3, "three", n = 2 } }, cur:fetchall())
            end)

            it("a row function set after execute gets row arrays, also after 'named'", function()
                local cur = conn:cursor()
                cur.row = "named"
                run(cur, ONE, 3)
                local got
                cur.row = function(_, row)
                    got = row
                    return row[2]
                end
                assert.equal("three", cur:fetchone())
                assert.same({ 3, "three", n = 2 }, got)
                cur.row = "named"
                run(cur, ALL)
                cur:fetchone()
                cur.row = function(_, row)
                    return row[1]
                end
                assert.same({ 2, 3 }, cur:fetchall())
            end)

            it("named rows made again as arrays hold one value per name", function()
                local cur = conn:cursor()
                cur.row = "named"
                run(cur, "SELECT id AS a, name AS a FROM t WHERE id = ?", 1)
                cur.row = "array"
                -- the named row kept the last column's value (README, "Named rows with
                -- duplicate column names")
                assert.same({ "one", "one", n = 2 }, cur:fetchone())
            end)

            if path == "reader" then
                it("cur.row set while its statement waits applies to its rows", function()
                    -- a read of row 1 that takes a while (counting to 300,000): the other
                    -- coroutine runs while it waits
                    local slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 " ..
                                 "FROM c WHERE x < 300000) SELECT id, name FROM t WHERE id = " ..
                                 "(SELECT count(*) FROM c) - 299999"
                    local cur = conn:cursor()
                    local row, in_use
                    sqlite.run(function()
                        sqlite.spawn(function()
                            cur.row = "named"
                            -- the statement is in flight: the cursor is in use
                            in_use = raises("ProgrammingError", cur.fetchone, cur)
                        end)
                        row = cur:execute(slow):fetchone()
                    end)
                    assert.matches("Recursive use", in_use.message)
                    assert.same({ id = 1, name = "one" }, row)
                end)
            end
        end)
    end)
end
