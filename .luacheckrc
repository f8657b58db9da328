std = "max"
max_line_length = 110
files["spec/"] = { std = "max+busted" }
files["bench/"] = { globals = { "arg" } }
