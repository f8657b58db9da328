-- pasyn_ngx_toplevel.lua: a module that queries at its top level, as some applications'
-- modules do. Required from a content handler it runs under require, a C function in
-- LuaJIT, across which nothing can yield: its calls must block and work.
local cfg = require "pasyn_ngx_conf"
local sqlite = require(cfg.module)

local conn = sqlite.connect(cfg.db, { readers = 1 })
local value = conn:execute("SELECT v FROM kv WHERE id = 66"):fetchone()[1]
conn:close()
return value
