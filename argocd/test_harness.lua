-- Runs an Argo CD health script the way Argo CD does: global `obj` in, a table out.
--   lua5.1 argocd/test_harness.lua path/to/health.lua < object
-- stdin holds the object as a Lua table constructor (tests/argocd/test_health_lua.py writes
-- it from the testdata YAML). Prints the status, a newline, then the message.
local read, write, exit = io.read, io.write, os.exit
local object = assert(loadstring("return " .. read("*a"), "object"))()
local script = assert(loadfile(arg[1]))

-- Argo CD's Lua sandbox has no file, process or module access: neither may the script.
io, os, require, dofile, loadfile, loadstring, load, package = nil, nil, nil, nil, nil, nil, nil, nil

obj = object
local ok, hs = pcall(script)
if not ok then
  write("script error: ", tostring(hs), "\n")
  exit(2)
end
if type(hs) ~= "table" or type(hs.status) ~= "string" or type(hs.message) ~= "string" then
  write("the script must return a table with string fields status and message\n")
  exit(3)
end
write(hs.status, "\n", hs.message)
