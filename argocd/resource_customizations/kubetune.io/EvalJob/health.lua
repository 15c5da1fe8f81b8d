-- Argo CD health check for kubetune.io/v1alpha1 EvalJob (Lua 5.1).
-- Argo CD sets the global `obj` (the live object) and reads the returned table's
-- `status` (Healthy, Progressing, Degraded, ...) and `message`.
--
--   no status yet                       Progressing  waiting for the operator
--   observedGeneration < generation     Progressing  (Pending/Running: the operator has not seen the edit)
--                                       Degraded     (Succeeded/Failed: kubetune never applies spec edits)
--   Pending                             Progressing  "Pending (<reason>): <message>"
--   Queued                              Progressing  "Queued (<reason>): <message>" (Kueue has not admitted its Job)
--   Suspended                           Suspended    "Suspended: <message>" (spec.suspend; resumes from a checkpoint)
--                                                    (incl. WaitingForFineTuneJob)
--   Running                             Progressing  "Running: tuned, 120/800 examples (15.0%)"
--   Failed                              Degraded     "Failed (<reason>): <message>"
--   Succeeded                           Healthy      the Succeeded condition's message
--
-- An EvalJob compares arbitrary models, so a negative delta is a result, not ill health;
-- regressions are judged on the FineTuneJob whose evaluation block created it.
local hs = {}

local function condition(ctype)
  for _, c in ipairs(obj.status.conditions or {}) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator"
  return hs
end

local phase = status.phase
local final = phase == "Succeeded" or phase == "Failed"
local succeeded = condition("Succeeded") or {}
local reason = succeeded.reason or "Unknown"
local message = succeeded.message or status.message or ""

local generation = obj.metadata.generation
local observed = status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  if final then
    hs.status = "Degraded"
    hs.message = string.format("spec changed after the job ended %s (generation %d, status is for %d); "
      .. "spec changes are not applied: delete and re-create the EvalJob", phase, generation, observed)
  else
    hs.status = "Progressing"
    hs.message = string.format("waiting for the operator to observe generation %d (status is for %d)",
      generation, observed)
  end
  return hs
end

if phase == "Pending" or phase == "Queued" then
  hs.status = "Progressing"
  hs.message = string.format("%s (%s): %s", phase, reason, message)
elseif phase == "Suspended" then
  local suspended = condition("Suspended") or {}
  hs.status = "Suspended"
  hs.message = "Suspended: " .. (suspended.message or message)
elseif phase == "Running" then
  hs.status = "Progressing"
  local p = status.progress
  if p ~= nil and p.total ~= nil and p.total > 0 then
    hs.message = string.format("Running: %s, %d/%d examples (%.1f%%)", p.model or "?", p.done or 0, p.total,
      p.percent or 0)
  else
    hs.message = "Running: " .. message
  end
  if reason ~= "Running" then -- e.g. Retrying after a pod failure
    hs.message = hs.message .. string.format(" (%s: %s)", reason, message)
  end
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = string.format("Failed (%s): %s", reason, message)
elseif phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = message
else
  hs.status = "Unknown"
  hs.message = "unknown phase " .. tostring(phase)
end
return hs
