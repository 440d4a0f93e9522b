#!lua name=thalassa_fleet_v1

-- The aqueduct fleet's shared configuration. Every function takes the same keys:
--   KEYS[1] version  (string)  the config version, incremented by every commit
--   KEYS[2] items    (hash)    "frontend:<key>" / "backend:<key>" -> the item's JSON (PUT body)
--   KEYS[3] changed  (hash)    the same fields -> the version that last wrote them (kept
--                              after a delete, so a change based on an older version conflicts)
--   KEYS[4] changes  (stream)  one entry per commit: version, node, change

local STREAM_LENGTH = 1000

-- commit(base, node, description, deadline, op1, field1, json1, ...): refuses with
-- {'late'} after `deadline` (epoch ms on this server's clock: the node has answered 503 by
-- then, so a command held up in a cut network and delivered later must not apply), with
-- {'conflict', field, version} when an item was written after `base` (the version the
-- committing node's config is based on); else bumps the version, writes every item (op 'put'
-- or 'delete') and appends one change entry, all as one step.
local function commit(keys, args)
  local base = tonumber(args[1])
  local deadline = tonumber(args[4])
  if base == nil or deadline == nil then
    return redis.error_reply('ERR the base version or the deadline is not a number')
  end
  local now = redis.call('TIME')
  if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > deadline then
    return {'late', '', 0}
  end
  for i = 5, #args, 3 do
    local changed = tonumber(redis.call('HGET', keys[3], args[i + 1]) or '0')
    if changed > base then
      return {'conflict', args[i + 1], changed}
    end
  end
  local version = redis.call('INCR', keys[1])
  for i = 5, #args, 3 do
    if args[i] == 'put' then
      redis.call('HSET', keys[2], args[i + 1], args[i + 2])
    else
      redis.call('HDEL', keys[2], args[i + 1])
    end
    redis.call('HSET', keys[3], args[i + 1], version)
  end
  redis.call('XADD', keys[4], 'MAXLEN', '~', STREAM_LENGTH, '*',
    'version', version, 'node', args[2], 'change', args[3])
  return {'ok', '', version}
end

-- seed(node, field1, json1, ...): the first node's own config becomes version 1 when the
-- store holds no config yet; returns {1, 1} when it did, {0, version} when another node's
-- config was there first.
local function seed(keys, args)
  local current = tonumber(redis.call('GET', keys[1]) or '0')
  if current > 0 then
    return {0, current}
  end
  for i = 2, #args, 2 do
    redis.call('HSET', keys[2], args[i], args[i + 1])
    redis.call('HSET', keys[3], args[i], 1)
  end
  redis.call('SET', keys[1], 1)
  redis.call('XADD', keys[4], 'MAXLEN', '~', STREAM_LENGTH, '*',
    'version', 1, 'node', args[1], 'change', 'seed')
  return {1, 1}
end

-- read(): the version, every item, and the node and change of the last commit, as of one
-- instant.
local function read(keys, args)
  local node, change = '', ''
  local last = redis.call('XREVRANGE', keys[4], '+', '-', 'COUNT', 1)
  if #last > 0 then
    local fields = last[1][2]
    for i = 1, #fields, 2 do
      if fields[i] == 'node' then node = fields[i + 1] end
      if fields[i] == 'change' then change = fields[i + 1] end
    end
  end
  return {tonumber(redis.call('GET', keys[1]) or '0'), redis.call('HGETALL', keys[2]), node, change}
end

redis.register_function('thalassa_fleet_commit', commit)
redis.register_function('thalassa_fleet_seed', seed)
redis.register_function{function_name = 'thalassa_fleet_read', callback = read,
  flags = {'no-writes'}}
