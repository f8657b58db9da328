-- app.lua: the handlers of examples/openresty/nginx.conf. One Connection per nginx worker,
-- opened in init_worker_by_lua (where a call blocks, which suits start-up) and shared by
-- every request of that worker; in the handlers a query yields the request's light thread.
local sqlite = require "pasyn_sqlite.ngx"
local cjson = require "cjson.safe"

local _M = {}

local conn -- this worker's Connection

function _M.init_worker(path)
    conn = sqlite.connect(path, { readers = 2, row = "named" }) -- rows as {id = ..., body = ...}
    conn:execute("CREATE TABLE IF NOT EXISTS notes(id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
end

-- POST /notes with the note as the body: inserts it; 201 and {"id": ...}.
function _M.add()
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if not body or body == "" then
        return ngx.exit(ngx.HTTP_BAD_REQUEST)
    end
    local cur = conn:execute("INSERT INTO notes(body) VALUES (?)", { body })
    ngx.status = ngx.HTTP_CREATED
    ngx.say(cjson.encode({ id = cur.lastrowid }))
end

-- GET /notes/<id>: {"id": ..., "body": ...}, or 404.
function _M.get(id)
    local row = conn:execute("SELECT id, body FROM notes WHERE id = ?", { tonumber(id) }):fetchone()
    if not row then
        return ngx.exit(ngx.HTTP_NOT_FOUND)
    end
    ngx.say(cjson.encode(row))
end

-- GET /notes: how many there are, and the last five, read by two light threads at once.
function _M.summary()
    local count = ngx.thread.spawn(function()
        return conn:execute("SELECT count(*) AS n FROM notes"):fetchone().n
    end)
    local last = ngx.thread.spawn(function()
        return conn:execute("SELECT id, body FROM notes ORDER BY id DESC LIMIT 5"):fetchall()
    end)
    local _, n = ngx.thread.wait(count)
    local _, rows = ngx.thread.wait(last)
    ngx.say(cjson.encode({ count = n, last = rows }))
end

return _M
