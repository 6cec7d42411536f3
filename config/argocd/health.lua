-- Argo CD health check for UnifiedConnector and ProductBinding (connectors.unified.dev).
-- Argo CD does not derive a custom resource's health from its children, so the operator rolls the collector's
-- health and the data flow up into status; this script reads that status, in kstatus order:
--   metadata.deletionTimestamp                    -> Progressing (finalizers release the shared collector)
--   spec.suspend                                  -> Suspended
--   status missing or observedGeneration behind   -> Progressing (the operator has not seen this spec yet)
--   Stalled=True or phase Error                   -> Degraded
--   Reconciling=True                              -> Progressing
--   Ready=True                                    -> Healthy (phase Warning keeps Healthy, with the warning)
--   anything else (Pending, Ready=False/Unknown)  -> Progressing
local hs = {}

local function condition(status, type)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

-- The most useful human message: status.message, else the given condition's message, else a default.
local function message(status, c, default)
  if status.message ~= nil and status.message ~= "" then
    return status.message
  end
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return default
end

if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Being deleted: waiting for the operator to release the shared collector"
  return hs
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended: spec.suspend is true, nothing is collected for this connector"
  return hs
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile"
  return hs
end

local generation = obj.metadata.generation
local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = message(status, stalled, "Stalled")
  return hs
end
if status.phase == "Error" then
  hs.status = "Degraded"
  hs.message = message(status, condition(status, "Ready"), "Error")
  return hs
end

local reconciling = condition(status, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = message(status, reconciling, "Reconciling")
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  if status.phase == "Warning" then
    hs.message = "Warning: " .. message(status, ready, "delivery is degraded")
  else
    hs.message = message(status, ready, "Ready")
  end
  return hs
end

hs.status = "Progressing"
hs.message = message(status, ready, "Waiting for data to reach the product")
return hs
