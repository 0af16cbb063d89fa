-- Argo CD health for sigil.dev/RemoteSigner. Runs in Argo's sandbox (Lua 5.1, base and table
-- libraries only: no string library), so it only compares and concatenates.
local hs = {}
if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the sigil operator to reconcile"
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the sigil operator to observe generation " .. obj.metadata.generation
  return hs
end
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Ready" then
      local detail = (condition.reason or "") .. ": " .. (condition.message or "")
      if condition.status == "True" then
        hs.status = "Healthy"
        hs.message = condition.message or "Ready"
      elseif condition.status == "False" then
        -- The operator sets Ready=False only for what needs a person: a bad spec, a missing
        -- Secret or ServiceAccount, an annotation another tool owns.
        hs.status = "Degraded"
        hs.message = detail
      else
        hs.status = "Progressing"
        hs.message = detail
      end
      return hs
    end
  end
end
hs.status = "Progressing"
hs.message = "Waiting for the Ready condition"
return hs
