std = "max"
max_line_length = 110
files["spec/"] = { std = "max+busted" }
files["bench/"] = { globals = { "arg" } }
files["lua/pasyn_sqlite/ngx.lua"] = { read_globals = { "ngx" } }
files["spec/nginx/"] = { std = "max+busted", globals = { "ngx" } }
files["examples/openresty/"] = { globals = { "ngx" } }
