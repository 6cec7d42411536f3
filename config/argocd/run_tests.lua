-- Runs health.lua over every case of health_test.yaml the way Argo CD does: the live object is the global
-- `obj` (JSON nulls are absent fields), the script's return value is compared with the expected status and
-- message. Prints one line per case and an "N passed, N failed" summary; exits non-zero on any failure.
-- Usage: lua5.4 run_tests.lua DIR   (DIR holds health.lua, health_test.yaml and testdata/)
local lyaml = require("lyaml")

local dir = arg[1] or "."

local function read(path)
  local f = assert(io.open(path, "r"))
  local s = f:read("a")
  f:close()
  return s
end

-- lyaml decodes YAML null as the lyaml.null sentinel; Argo CD's decoder leaves such fields out.
local function strip_nulls(v)
  if type(v) ~= "table" then
    return v
  end
  local out = {}
  for k, x in pairs(v) do
    if x ~= lyaml.null then
      out[k] = strip_nulls(x)
    end
  end
  return out
end

local script = read(dir .. "/health.lua")

local function health(obj)
  -- A fresh environment per object, as Argo CD gives each evaluation its own state.
  local env = setmetatable({ obj = obj }, { __index = _G })
  local chunk = assert(load(script, "health.lua", "t", env))
  return pcall(chunk)
end

-- `run_tests.lua DIR FILE`: print the health of each live object in FILE (one object or a List, as
-- `kubectl get -o yaml` writes) as "kind/name status: message".
if arg[2] ~= nil then
  local doc = strip_nulls(lyaml.load(read(arg[2])))
  local items = doc.items or { doc }
  for _, obj in ipairs(items) do
    local ok, hs = health(obj)
    print(string.format("%s/%s %s: %s", obj.kind, obj.metadata.name, ok and hs.status or "ERROR", ok and hs.message or tostring(hs)))
  end
  os.exit(true)
end

local cases = lyaml.load(read(dir .. "/health_test.yaml")).tests
local passed, failed = 0, 0
for _, case in ipairs(cases) do
  local obj = strip_nulls(lyaml.load(read(dir .. "/" .. case.inputPath)))
  local ok, hs = health(obj)
  local want = case.healthStatus
  if ok and type(hs) == "table" and hs.status == want.status and hs.message == want.message then
    passed = passed + 1
    print("ok   " .. case.inputPath .. " -> " .. hs.status)
  else
    failed = failed + 1
    local got = ok and type(hs) == "table" and (tostring(hs.status) .. ": " .. tostring(hs.message)) or tostring(hs)
    print("FAIL " .. case.inputPath .. "\n     want " .. want.status .. ": " .. want.message .. "\n     got  " .. got)
  end
end
-- The argocd-cm snippet people paste must carry exactly this script for both kinds.
local cm = lyaml.load(read(dir .. "/argocd-cm.yaml"))
for _, kind in ipairs({ "UnifiedConnector", "ProductBinding" }) do
  local key = "resource.customizations.health.connectors.unified.dev_" .. kind
  if cm.data ~= nil and cm.data[key] == script then
    passed = passed + 1
    print("ok   argocd-cm.yaml " .. key .. " == health.lua")
  else
    failed = failed + 1
    print("FAIL argocd-cm.yaml " .. key .. " differs from health.lua: run config/argocd/test.sh --write")
  end
end

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and passed > 0)
