-- Argo CD health check for proxmox-operator.dev/ProxmoxCluster.
--
-- Install it in the argocd-cm ConfigMap under the key
--   resource.customizations.health.proxmox-operator.dev_ProxmoxCluster
-- (see README.md next to this file).
--
-- Argo CD sets the global `obj` to the live object (JSON decoded: numbers are numbers, booleans are
-- booleans, null is absent) and reads back a table {status = ..., message = ...}; status must be one of
-- Healthy, Progressing, Degraded, Suspended, Missing, Unknown.
--
-- Written for Argo CD's interpreter, gopher-lua (Lua 5.1 syntax: no `//`, no `goto`, no bitwise
-- operators), and it runs unchanged on Lua 5.4. A script from argocd-cm runs WITHOUT the standard
-- libraries (unless resource.customizations.useOpenLibs is set): no `string`, no `math`, no string
-- methods. Only base functions (type, tostring, tonumber, ipairs) and `..` are used here.
--
-- Every value in `obj` may be missing or of an unexpected type: each read is guarded, so an odd object
-- gives Progressing or Unknown with a message, never a Lua error (which Argo CD would show as Unknown
-- with the error text).

local hs = {}

-- t[key] if t is a table, else nil: reading through a missing or non-table field must not raise.
local function field(t, key)
  if type(t) == "table" then
    return t[key]
  end
  return nil
end

-- A value as text for a message: strings as they are, numbers and booleans converted, anything else "".
local function text(v)
  if type(v) == "string" then
    return v
  end
  if type(v) == "number" or type(v) == "boolean" then
    return tostring(v)
  end
  return ""
end

-- A generation as a number. Generations are JSON integers; a numeric string ("3") is accepted too, as
-- a hand-written or converted object may carry one. Anything else is nil (unknown).
local function number(v)
  if type(v) == "number" then
    return v
  end
  if type(v) == "string" then
    return tonumber(v)
  end
  return nil
end

-- The first condition of the given type in status.conditions. A conditions value that is not a list,
-- and entries that are not objects, are skipped rather than trusted.
local function find_condition(conditions, wanted)
  if type(conditions) ~= "table" then
    return nil
  end
  for _, condition in ipairs(conditions) do
    if type(condition) == "table" and condition.type == wanted then
      return condition
    end
  end
  return nil
end

-- "Reason: message", or whichever of the two is set.
local function reason_and_message(condition)
  local reason = text(condition.reason)
  local message = text(condition.message)
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  if reason ~= "" then
    return reason
  end
  return message
end

if type(obj) ~= "table" then
  hs.status = "Unknown"
  hs.message = "No object to assess"
  return hs
end

local metadata = field(obj, "metadata")
local status = field(obj, "status")
local conditions = field(status, "conditions")

-- Suspended first: while the annotation proxmox-operator.dev/paused is "true" the operator does not
-- probe, so neither Ready nor observedGeneration says anything current. The Paused condition is the
-- operator's acknowledgement of the annotation (the annotation alone would also "pause" an operator
-- that does not support pausing), so the condition decides, not the annotation.
local paused = find_condition(conditions, "Paused")
if paused ~= nil and paused.status == "True" then
  local name = text(field(metadata, "name"))
  local namespace = text(field(metadata, "namespace"))
  local command = "kubectl annotate proxmoxcluster"
  if name ~= "" then
    command = command .. " " .. name
  end
  if namespace ~= "" then
    command = command .. " -n " .. namespace
  end
  hs.status = "Suspended"
  hs.message = "Paused: the operator does not probe this Proxmox cluster while the annotation "
    .. "proxmox-operator.dev/paused is \"true\". To resume, remove the annotation: "
    .. command .. " proxmox-operator.dev/paused-"
  return hs
end

-- No status, or no Ready condition yet: the operator has not finished its first probe (or is not
-- running). That is a wait, not a failure.
if type(status) ~= "table" then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report a status (no status yet)"
  return hs
end
local ready = find_condition(conditions, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator's first probe (no Ready condition yet)"
  return hs
end

-- The status is only meaningful for the spec it was computed from. The API server always sets
-- metadata.generation; without a usable one there is no telling whether the status is current, and
-- the object is malformed rather than waiting for something: Unknown.
local generation = number(field(metadata, "generation"))
if generation == nil then
  hs.status = "Unknown"
  hs.message = "metadata.generation is missing or not a number: cannot tell whether the status is current"
  return hs
end

-- status.observedGeneration behind (or otherwise not equal to) metadata.generation: the spec changed
-- and the operator has not caught up yet, so even a Ready=False describes the old spec. Progressing,
-- with the last known result for context. A missing or non-numeric observedGeneration cannot prove
-- the status current either.
local last = " (last reported: Ready=" .. text(ready.status)
local last_detail = reason_and_message(ready)
if text(ready.reason) ~= "" then
  last = last .. ", " .. text(ready.reason)
end
last = last .. ")"
local observed_raw = field(status, "observedGeneration")
local observed = number(observed_raw)
if observed == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator: status.observedGeneration is not set" .. last
  return hs
end
if observed ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to catch up with the spec: metadata.generation is "
    .. text(field(metadata, "generation")) .. ", status.observedGeneration is " .. text(observed_raw) .. last
  return hs
end

-- The Ready condition carries its own observedGeneration; when present it must be current as well (a
-- status written for the new generation could still hold a Ready computed for the old one).
local ready_generation_raw = ready.observedGeneration
if ready_generation_raw ~= nil and number(ready_generation_raw) ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to catch up with the spec: the Ready condition describes generation "
    .. text(ready_generation_raw) .. ", metadata.generation is " .. text(field(metadata, "generation")) .. last
  return hs
end

-- The status is current: Ready summarises all other conditions (Authenticated, Reachable, TLSVerified,
-- Quorate, PermissionsSufficient, ...), so it alone decides. Reconciling and Stalled, the conditions kstatus
-- (Flux, kpt) reads, follow from Ready and are not read here: with Ready=False, Stalled (only a user can fix
-- it; kstatus says Failed) and Reconciling (the operator retries; kstatus says InProgress) are both Degraded,
-- as both need a look; with Ready=Unknown (reason Probing: a first probe under way), Progressing.
if ready.status == "True" then
  -- Healthy: logged in and read the cluster for the current spec. The operator's message says what it
  -- found (version, nodes).
  hs.status = "Healthy"
  hs.message = text(ready.message)
  if hs.message == "" then
    hs.message = "Ready"
  end
  return hs
end
if ready.status == "False" then
  -- Degraded: the operator tried with the current spec and failed (AuthenticationFailed, TLSError,
  -- Unreachable, SecretNotFound, ...). Reason first, so the Argo CD UI shows what kind of failure it is.
  hs.status = "Degraded"
  hs.message = last_detail
  if hs.message == "" then
    hs.message = "Ready is False"
  end
  return hs
end
if ready.status == "Unknown" then
  -- Unknown means the operator has not decided yet for this generation (e.g. a probe in flight): a
  -- wait, not a failure, so Progressing rather than Argo CD's Unknown (which would rank worse than
  -- Degraded in the application's health).
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to decide"
  if last_detail ~= "" then
    hs.message = hs.message .. ": " .. last_detail
  end
  return hs
end

-- Ready.status is none of True, False, Unknown (the CRD's enum forbids that): say so rather than guess.
hs.status = "Unknown"
hs.message = "The Ready condition has an unrecognised status: " .. text(ready.status)
return hs
