-- The child of the crash proof (spec/proofs/crash.lua): writes to a database through the public
-- API from many coroutines until it is killed, and prints on stdout, flushed, each write as
-- soon as its call returned (acknowledged):
--   "ready"                once connected
--   "i <id>"               an autocommit INSERT of item <id>
--   "m <first> <count>"    an executemany of items <first> .. <first> + <count> - 1
--   "t <id>"               a transaction (conn:transaction) that moved an amount between two
--                          accounts and logged transfer <id>
-- A reader coroutine checks meanwhile that every snapshot keeps the accounts' total; a broken
-- invariant, or any error, ends the child with a message on stderr and a non-zero status.
-- Usage: lua crash_child.lua DB SYNCHRONOUS FIRST_ID SEED SECONDS
--   SYNCHRONOUS: "default" (the connect option left out) or a value of the option; ids are
--   taken from FIRST_ID on; after SECONDS (a bound, should nobody kill it) it exits with 3.
local sqlite = require "pasyn_sqlite"

local path, synchronous, first_id, seed, seconds = ...
first_id, seed, seconds = tonumber(first_id), tonumber(seed), tonumber(seconds)
assert(path and synchronous and first_id and seed and seconds,
       "usage: crash_child.lua DB SYNCHRONOUS FIRST_ID SEED SECONDS")
math.randomseed(seed)

local ACCOUNTS, TOTAL = 16, 16 * 1000 -- as crash.lua creates them
local WRITERS, BANKERS = 24, 8

local out = io.stdout
local function ack(...)
    out:write(table.concat({ ... }, " "), "\n")
    out:flush()
end

local function die(message)
    io.stderr:write("crash_child: ", tostring(message), "\n")
    os.exit(2)
end

local next_id = first_id
local function new_ids(n)
    local id = next_id
    next_id = next_id + n
    return id
end

local function payload()
    return string.rep(string.char(math.random(97, 122)), math.random(0, 200))
end

local deadline = os.time() + seconds

local function writer(conn)
    while os.time() < deadline do
        if math.random() < 0.8 then
            local id = new_ids(1)
            conn:execute("INSERT INTO items (id, payload) VALUES (?, ?)", id, payload())
            ack("i", id)
        else
            local n = math.random(2, 6)
            local first = new_ids(n)
            local sets = {}
            for k = 1, n do
                sets[k] = { first + k - 1, payload(), first, n }
            end
            conn:executemany("INSERT INTO items (id, payload, batch, batch_size) VALUES (?, ?, ?, ?)",
                             sets)
            ack("m", first, n)
        end
    end
end

local function banker(conn)
    while os.time() < deadline do
        local id = new_ids(1)
        local from = math.random(1, ACCOUNTS)
        local to = (from + math.random(1, ACCOUNTS - 1) - 1) % ACCOUNTS + 1
        local amount = math.random(1, 50)
        conn:transaction(function(c)
            c:execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", amount, from)
            c:execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", amount, to)
            c:execute("INSERT INTO transfers (id, src, dst, amount) VALUES (?, ?, ?, ?)",
                      id, from, to, amount)
        end)
        ack("t", id)
    end
end

-- Every snapshot a reader sees holds the total: a transfer is never half seen.
local function auditor(conn)
    while os.time() < deadline do
        local total = conn:execute("SELECT sum(balance) FROM accounts"):fetchone()[1]
        if total ~= TOTAL then
            die("a reader saw a total of " .. tostring(total) .. ", not " .. TOTAL)
        end
        sqlite.sleep(0.005)
    end
end

local ok, err = pcall(sqlite.run, function()
    local options = {}
    if synchronous ~= "default" then
        options.synchronous = synchronous
    end
    local conn = sqlite.connect(path, options)
    ack("ready")
    for _ = 1, WRITERS do
        sqlite.spawn(writer, conn)
    end
    for _ = 1, BANKERS do
        sqlite.spawn(banker, conn)
    end
    sqlite.spawn(auditor, conn)
end)
if not ok then
    die(err)
end
os.exit(3) -- nobody killed it in time
