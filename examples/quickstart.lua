-- The quick start of the README: connect, create, insert with parameters, commit, select.
-- Runs twice: as a plain script (calls block) and inside the built-in scheduler (calls yield).
local sqlite = require "pasyn_sqlite"

local function demo(conn, label)
    conn:execute("CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT, age INTEGER)")
    conn:execute("INSERT INTO users (name, age) VALUES (?, ?)", "ada", 36)
    conn:execute("INSERT INTO users (name, age) VALUES (:name, :age)", { name = "grace", age = 45 })
    conn:commit() -- a no-op here: each write outside BEGIN ... COMMIT is committed already
    local rows = conn:execute("SELECT id, name, age FROM users WHERE age > ? ORDER BY id", 30):fetchall()
    for _, row in ipairs(rows) do
        print(label, row[1], row[2], row[3])
    end
end

-- A plain script: no scheduler, every call blocks until done.
local conn = sqlite.connect(":memory:")
demo(conn, "plain")
conn:close()

-- Inside sqlite.run: calls yield, and other coroutines run meanwhile.
sqlite.run(function()
    local db = sqlite.connect(":memory:")
    local workers = {}
    for i = 1, 3 do
        workers[i] = sqlite.spawn(function()
            return db:execute("SELECT ? * 2", i):fetchone()[1]
        end)
    end
    demo(db, "async")
    for i = 1, 3 do
        print("async", "worker " .. i, workers[i]:join())
    end
    db:close()
end)
