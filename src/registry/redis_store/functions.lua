#!lua name=thalassa_v1
-- The registry's atomic steps, as one Redis Functions library (Functions, not EVAL: the
-- script cache is not replicated, a library is). Every change and its stream event are one
-- atomic step, on the store's clock (TIME), so every node serves the same history.
--
-- Keys (one hash tag, so they share a cluster slot):
--   KEYS[1] meta    hash   id -> "<lease ms>|<meta json>"
--   KEYS[2] dl      zset   id scored by its deadline (epoch ms)
--   KEYS[3] ev      stream online/offline events, ids issued by XADD *
--   KEYS[4] reaper  hash   last_run, hold_from, hold_until (epoch ms) for the stall hold

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function int(n)
  return string.format('%.0f', n)
end

-- The meta part of a stored value (after the lease prefix).
local function meta_of(value)
  local bar = string.find(value, '|', 1, true)
  if not bar then return nil end
  return string.sub(value, bar + 1)
end

local function lease_of(value)
  local bar = string.find(value, '|', 1, true)
  if not bar then return 0 end
  return tonumber(string.sub(value, 1, bar - 1)) or 0
end

-- ARGV: id, lease ms, meta json.
-- Returns {outcome, lastKnown, deadline, event id or ''}.
local function upsert(keys, args)
  local id, lease, meta = args[1], tonumber(args[2]), args[3]
  local now = now_ms()
  local deadline = now + lease
  local old = redis.call('HGET', keys[1], id)
  local outcome = 'refreshed'
  if not old then
    outcome = 'created'
  elseif meta_of(old) ~= meta then
    outcome = 'updated'
  end
  redis.call('HSET', keys[1], id, int(lease) .. '|' .. meta)
  redis.call('ZADD', keys[2], deadline, id)
  local event = ''
  if outcome ~= 'refreshed' then
    event = redis.call('XADD', keys[3], '*', 'k', 'on', 'id', id, 'lk', int(now), 'dl', int(deadline), 'm', meta)
  end
  return {outcome, int(now), int(deadline), event}
end

-- ARGV: id. Returns the event id, or '' when the id did not exist.
local function remove(keys, args)
  local id = args[1]
  if redis.call('HDEL', keys[1], id) == 0 then
    return ''
  end
  redis.call('ZREM', keys[2], id)
  return redis.call('XADD', keys[3], '*', 'k', 'off', 'id', id, 'r', 'deleted')
end

-- The longest lease among registrations due in (began, now].
local function longest_lease_due(keys, began, now)
  local ids = redis.call('ZRANGEBYSCORE', keys[2], '(' .. int(began), int(now))
  local longest = 0
  for i = 1, #ids, 1000 do
    local chunk = {}
    for j = i, math.min(i + 999, #ids) do chunk[#chunk + 1] = ids[j] end
    local values = redis.call('HMGET', keys[1], unpack(chunk))
    for _, value in ipairs(values) do
      if value then
        local lease = lease_of(value)
        if lease > longest then longest = lease end
      end
    end
  end
  return longest
end

-- One expiry round, by whichever node calls first (each due id goes exactly once).
-- ARGV: stream length kept, most ids per round, stall gap ms, longest hold ms.
-- Returns {now, next deadline or '', holding 0/1, {expired ids}}.
local function reap(keys, args)
  local maxlen, limit = args[1], tonumber(args[2])
  local stall_gap, max_hold = tonumber(args[3]), tonumber(args[4])
  local now = now_ms()
  local state = redis.call('HMGET', keys[4], 'last_run', 'hold_from', 'hold_until')
  local last = tonumber(state[1])
  local hold_from, hold_until = tonumber(state[2]), tonumber(state[3])
  if last and now - last > stall_gap then
    -- Nobody reaped for a while: the cluster, the store or a failover stalled. Leases that
    -- ran out meanwhile are held for one lease length so their services can heartbeat.
    local began = last
    if hold_until and now < hold_until and hold_from < began then began = hold_from end
    local longest = math.min(longest_lease_due(keys, began, now), max_hold)
    if longest > 0 then
      hold_from, hold_until = began, now + longest
      redis.call('HSET', keys[4], 'hold_from', int(hold_from), 'hold_until', int(hold_until))
    end
  end
  redis.call('HSET', keys[4], 'last_run', int(now))
  local cutoff, holding = now, 0
  if hold_until and now < hold_until then
    cutoff, holding = hold_from, 1
  elseif hold_until then
    redis.call('HDEL', keys[4], 'hold_from', 'hold_until')
  end
  local due = redis.call('ZRANGEBYSCORE', keys[2], '-inf', int(cutoff), 'LIMIT', 0, limit)
  -- Removals in bulk (one variadic command per 1000 ids), then one entry per id: this is the
  -- cost of a mass expiry, keep it lean.
  for i = 1, #due, 1000 do
    local chunk = {}
    for j = i, math.min(i + 999, #due) do chunk[#chunk + 1] = due[j] end
    redis.call('ZREM', keys[2], unpack(chunk))
    redis.call('HDEL', keys[1], unpack(chunk))
  end
  for _, id in ipairs(due) do
    redis.call('XADD', keys[3], '*', 'k', 'off', 'id', id, 'r', 'expired')
  end
  -- The stream is trimmed here, not on every write: at least once a second, and never below
  -- what a burst needs (a node's copy that finds its position trimmed away reloads).
  redis.call('XTRIM', keys[3], 'MAXLEN', '~', maxlen)
  local next_deadline = ''
  if #due >= limit then
    next_deadline = int(now)
  elseif holding == 1 then
    next_deadline = int(hold_until)
  else
    local first = redis.call('ZRANGE', keys[2], 0, 0, 'WITHSCORES')
    if first[2] then next_deadline = first[2] end
  end
  return {int(now), next_deadline, holding, due}
end

redis.register_function('thalassa_upsert', upsert)
redis.register_function('thalassa_remove', remove)
redis.register_function('thalassa_reap', reap)
