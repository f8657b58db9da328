-- The Lua thread's own cost per statement: runs N statements of one shape and nothing else, so
-- that two runs under callgrind, N = 22000 and N = 2000, differ by 20,000 statements (start-up
-- and the database's creation cancel). Only the main thread counts (the Lua thread; the pool's
-- readers and writer are threads of their own):
--
--   export LUA_PATH="lua/?.lua;bench/?.lua;;" LUA_CPATH="build/lua5.4/?.so;;"
--   lua5.4 bench/per_statement.lua 0          # makes the database once (outside callgrind)
--   for n in 2000 22000; do
--     valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=cg.$n.%p \
--       lua5.4 bench/per_statement.lua $n point
--   done
--   # instructions per statement: (Ir of cg.22000.*-01 - Ir of cg.2000.*-01) / 20000
--   # (callgrind_annotate cg.22000.<pid>-01 | head shows a file's Ir; "-01" is the main thread)
--
-- The same with build/luajit and luajit. Shapes (the second argument, default point):
--   point    pasyn, one coroutine of sqlite.run: conn:execute(POINT, id):fetchone() (W1)
--   all      the same with fetchall() (S1)
--   join     pasyn, one coroutine: a three-way join for one order id, fetchall() (S3)
--   update   pasyn, one coroutine: UPDATE users SET age = ? WHERE id = ? (handed to the writer)
--   many     pasyn, 256 coroutines of sqlite.run, N/256 point reads each (so 19,968 more
--            in the longer run), handed to readers: other coroutines are ready, and the
--            hand-off is forced (core.set_handoff "always") so that the machine's load does not
--            decide it
--   dbi      LuaDBI, a prepared POINT: execute(id), fetch(false) (W1's reference)
--   dbijoin  LuaDBI, the prepared join (S3's reference)
--   dbiupdate LuaDBI, the prepared UPDATE, autocommit
-- A handed-off statement's Lua thread may spin for its completion (c/hub.c, spin_until) when
-- the machine has a core spare, which depends on the machine's load: for update and many,
-- take spin_until's inclusive count out (callgrind_annotate --inclusive=yes).
-- pasyn's pool takes inline_budget = 1 s (INLINE_BUDGET): under callgrind a read is some 50
-- times slower, and with the default budget its runs would no longer count as short enough to
-- run inline (then every read would go to a reader); and a coroutine that reads inline lets
-- the others run once per budget, which with a short one would add a load-dependent share of
-- the loop's work to each read. Environment: PER_STATEMENT_DB, the
-- database file (default $TMPDIR or /tmp, pasyn-per-statement.db): made when missing with
-- 10,000 users, 500 products and 5,000 orders (WAL), reused otherwise. An update changes
-- ages, which the reads never check.
-- Runs on Lua 5.1 (LuaJIT) to 5.4.
local sqlite = require "pasyn_sqlite"
local core = require "pasyn_sqlite.core"

local N = tonumber(arg[1] or "2000")
local SHAPE = arg[2] or "point"
local tmp = os.getenv("TMPDIR")
local DB = os.getenv("PER_STATEMENT_DB") or
           ((tmp and tmp ~= "" and tmp or "/tmp") .. "/pasyn-per-statement.db")
local USERS, PRODUCTS, ORDERS = 10000, 500, 5000
local OPTIONS = { inline_budget = tonumber(os.getenv("INLINE_BUDGET") or "1") }

local POINT = "SELECT * FROM users WHERE id = ?"
local JOIN = "SELECT o.id, o.quantity, u.name, u.email, p.name, p.price FROM orders o " ..
             "JOIN users u ON u.id = o.user_id JOIN products p ON p.id = o.product_id WHERE o.id = ?"
local UPDATE = "UPDATE users SET age = ? WHERE id = ?"

local function exists(path)
    local f = io.open(path, "rb")
    if f then
        f:close()
    end
    return f ~= nil
end

if not exists(DB) then
    local conn = sqlite.connect(DB, { readers = 0 })
    conn:executescript([[
CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, email TEXT, age INTEGER, city TEXT);
CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT, price REAL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER, product_id INTEGER, quantity INTEGER,
                     created TEXT);]])
    local i = 0
    conn:executemany("INSERT INTO users VALUES (?, ?, ?, ?, ?)", function()
        i = i + 1
        if i <= USERS then
            return { i, "user " .. i, "user" .. i .. "@example.org", 18 + i % 63, "city " .. i % 40 }
        end
    end)
    i = 0
    conn:executemany("INSERT INTO products VALUES (?, ?, ?)", function()
        i = i + 1
        if i <= PRODUCTS then
            return { i, "product " .. i, i * 1.25 }
        end
    end)
    i = 0
    conn:executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?)", function()
        i = i + 1
        if i <= ORDERS then
            return { i, i * 7 % USERS + 1, i * 11 % PRODUCTS + 1, i % 9 + 1, "2024-01-01" }
        end
    end)
    conn:execute("ANALYZE")
    conn:execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn:close()
end

local function id_of(i, rows)
    return (i * 7919) % rows + 1
end

local function check(ok, what)
    if not ok then
        error(what, 2)
    end
end

local shapes = {}

function shapes.point()
    local conn = sqlite.connect(DB, OPTIONS)
    sqlite.run(function()
        for i = 1, N do
            local id = id_of(i, USERS)
            check(conn:execute(POINT, id):fetchone()[1] == id, "point: a wrong row")
        end
    end)
    conn:close()
end

function shapes.all()
    local conn = sqlite.connect(DB, OPTIONS)
    sqlite.run(function()
        for i = 1, N do
            local id = id_of(i, USERS)
            local rows = conn:execute(POINT, id):fetchall()
            check(#rows == 1 and rows[1][1] == id, "all: a wrong row")
        end
    end)
    conn:close()
end

function shapes.join()
    local conn = sqlite.connect(DB, OPTIONS)
    sqlite.run(function()
        for i = 1, N do
            local id = id_of(i, ORDERS)
            local rows = conn:execute(JOIN, id):fetchall()
            check(#rows == 1 and rows[1][1] == id, "join: a wrong row")
        end
    end)
    conn:close()
end

function shapes.update()
    local conn = sqlite.connect(DB, OPTIONS)
    sqlite.run(function()
        for i = 1, N do
            check(conn:execute(UPDATE, 18 + i % 63, id_of(i, USERS)).rowcount == 1, "update: no row")
        end
    end)
    conn:close()
end

function shapes.many()
    local conn = sqlite.connect(DB, OPTIONS)
    local K = 256
    local per = math.floor(N / K)
    core.set_handoff("always")
    sqlite.run(function()
        local hs = {}
        for c = 1, K do
            hs[c] = sqlite.spawn(function()
                for i = (c - 1) * per + 1, c * per do
                    local id = id_of(i, USERS)
                    check(conn:execute(POINT, id):fetchone()[1] == id, "many: a wrong row")
                end
            end)
        end
        for c = 1, K do
            hs[c]:join()
        end
    end)
    conn:close()
end

local function dbi(sql, each)
    local DBI = require "DBI"
    local db = assert(DBI.Connect("SQLite3", DB))
    db:autocommit(true)
    assert(DBI.Do(db, "PRAGMA busy_timeout = 5000")) -- as pasyn's pool waits for a lock
    local st = assert(db:prepare(sql))
    for i = 1, N do
        each(st, i)
    end
    st:close()
    db:close()
end

function shapes.dbi()
    dbi(POINT, function(st, i)
        local id = id_of(i, USERS)
        st:execute(id)
        check(st:fetch(false)[1] == id, "dbi: a wrong row")
    end)
end

function shapes.dbijoin()
    dbi(JOIN, function(st, i)
        local id = id_of(i, ORDERS)
        st:execute(id)
        local rows = {}
        while true do
            local row = st:fetch(false)
            if not row then
                break
            end
            rows[#rows + 1] = row
        end
        check(#rows == 1 and rows[1][1] == id, "dbijoin: a wrong row")
    end)
end

function shapes.dbiupdate()
    dbi(UPDATE, function(st, i)
        assert(st:execute(18 + i % 63, id_of(i, USERS)))
        check(st:affected() == 1, "dbiupdate: no row")
    end)
end

if N > 0 then
    assert(shapes[SHAPE], "no shape " .. SHAPE)()
end
