-- Argo CD health check for kubetune.io/v1alpha1 FineTuneJob (Lua 5.1).
-- Argo CD sets the global `obj` (the live object) and reads the returned table's
-- `status` (Healthy, Progressing, Degraded, ...) and `message`.
--
--   no status yet                       Progressing  waiting for the operator
--   observedGeneration < generation     Progressing  (Pending/Running: the operator has not seen the edit)
--                                       Degraded     (Succeeded/Failed: kubetune never applies spec edits)
--   Pending                             Progressing  "Pending (<reason>): <message>"
--   Queued                              Progressing  "Queued (<reason>): <message>" (Kueue has not admitted its Job)
--   Suspended                           Suspended    "Suspended: <message>" (spec.suspend; resumes from a checkpoint)
--   Running                             Progressing  "Running: step 37/200 (18.5%)"
--   Failed                              Degraded     "Failed (<reason>): <message>"
--   Succeeded, no spec.evaluation       Healthy      the Succeeded condition's message
--   Succeeded, evaluation not done      Progressing  "training succeeded; evaluating (...)"
--   Succeeded, evaluation failed        Degraded     the Evaluated condition's message
--   Succeeded, evaluation regressed     Degraded     "evaluation regressed: rougeL -0.0312"
--   Succeeded, evaluated                Healthy
--
-- "Regressed": a metric in status.evaluation.delta (tuned minus base) got worse, i.e. it is
-- below 0 for a higher-is-better metric (exactMatch, tokenF1, rouge*, bleu, accuracy*) or
-- above 0 for perplexity (lower is better). Other metrics (loaded through `evaluate`) have no
-- known direction and are ignored; so is status.evaluation.forgetting (retention data).
local hs = {}

local function condition(ctype)
  for _, c in ipairs(obj.status.conditions or {}) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

-- +1: higher is better, -1: lower is better, nil: unknown direction.
local function direction(metric)
  if metric == "perplexity" then
    return -1
  end
  if metric == "exactMatch" or metric == "tokenF1" or metric == "bleu"
      or string.find(metric, "^rouge") or string.find(metric, "^accuracy") then
    return 1
  end
  return nil
end

-- "rougeL -0.0312, perplexity +0.5000" for the metrics of delta that got worse; nil if none.
local function regressions(delta)
  local names = {}
  for metric, value in pairs(delta or {}) do
    local d = direction(metric)
    if type(value) == "number" and d ~= nil and value * d < 0 then
      table.insert(names, metric)
    end
  end
  if #names == 0 then
    return nil
  end
  table.sort(names) -- pairs() has no order; the message must not flap
  local parts = {}
  for _, metric in ipairs(names) do
    table.insert(parts, string.format("%s %+.4f", metric, delta[metric]))
  end
  return table.concat(parts, ", ")
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
      .. "spec changes are not applied: delete and re-create the FineTuneJob", phase, generation, observed)
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
  if p ~= nil and p.totalSteps ~= nil and p.totalSteps > 0 then
    hs.message = string.format("Running: step %d/%d (%.1f%%)", p.step or 0, p.totalSteps, p.percent or 0)
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
  local evaluated = condition("Evaluated")
  local evaluation = status.evaluation or {}
  if evaluated == nil and obj.spec ~= nil and obj.spec.evaluation ~= nil then
    hs.status = "Progressing"
    hs.message = "training succeeded; evaluating (the EvalJobs are not created yet)"
  elseif evaluated == nil then
    hs.status = "Healthy"
    hs.message = message
  elseif evaluated.status == "False" then
    hs.status = "Degraded"
    hs.message = string.format("evaluation failed (%s): %s", evaluated.reason, evaluated.message or "")
  elseif evaluated.status == "True" then
    local worse = regressions(evaluation.delta)
    if worse ~= nil then
      hs.status = "Degraded"
      hs.message = "evaluation regressed: " .. worse
    else
      hs.status = "Healthy"
      hs.message = "training succeeded; " .. (evaluated.message or "evaluated")
    end
  else
    hs.status = "Progressing"
    hs.message = string.format("training succeeded; evaluating (%s: %s)", evaluated.reason, evaluated.message or "")
  end
else
  hs.status = "Unknown"
  hs.message = "unknown phase " .. tostring(phase)
end
return hs
