-- wrk script: PUT a 100-byte value under one of 10,000 keys per thread.
local body = string.rep("v", 100)
local n = 0
request = function()
  n = n + 1
  return wrk.format("PUT", "/kv/bench-" .. (n % 10000), nil, body)
end
