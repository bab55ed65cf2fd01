package limits

// The Lua scripts of the Redis limiter. Each runs atomically in Redis, so
// one admission checks and takes every limit of a key at once, whatever the
// number of replicas. All of a key's Redis keys share the hash tag {keyID},
// so a cluster keeps them in one slot. Times are milliseconds since the Unix
// epoch, from Redis's own clock (TIME) unless ARGV[1] overrides it (tests).
// Numbers that may have fractions come back as strings: Redis truncates Lua
// numbers to integers.

// admitLua checks the monthly quotas, the concurrency slots, the
// tokens-per-minute bucket and the request rate (a GCRA), in that order,
// and only when all pass takes them: a reservation and a slot that expire
// unless renewed, the tokens, and the rate. Slots whose holder stopped
// renewing them (a crashed replica) are expired first, and their
// reservations are counted as used: the request may have been committed,
// and a quota must not be exceeded.
//
// KEYS: 1 gcra (string: theoretical arrival time), 2 tpm (hash: l level,
// ts last refill), 3 slots (zset: lease id -> expiry), 4 res (hash: lease
// id -> "reserved tokens:month"), 5 the month's hash (r, t committed; rr,
// rt reserved; seeded).
// ARGV: 1 now (0: TIME), 2 lease id, 3 requests per second, 4 burst,
// 5 tokens per minute, 6 max concurrent, 7 monthly requests, 8 monthly
// tokens, 9 prompt, 10 output, 11 min output, 12 slot ttl, 13 month
// ("" when no monthly quota), 14 month key prefix, 15 month hash lifetime (ms).
//
// Returns {0, output, remaining requests, reset requests ms, tokens level,
// committed requests, committed tokens} on success, or a refusal: {-1}
// the month is not seeded yet; {1, in flight} request quota; {2, in
// flight} token quota used; {3, in flight, left} token quota short; {4}
// concurrency; {5, wait ms} tokens per minute; {6, wait ms} rate.
const admitLua = `
local now = tonumber(ARGV[1])
if now <= 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local id = ARGV[2]
local rps, burst, tpm, maxc = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local mreq, mtok = tonumber(ARGV[7]), tonumber(ARGV[8])
local prompt, output, minout = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local ttl, month, mprefix, mexp = tonumber(ARGV[12]), ARGV[13], ARGV[14], ARGV[15]
local function f(x) return string.format('%.17g', x) end

local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, old in ipairs(expired) do
  local v = redis.call('HGET', KEYS[4], old)
  if v then
    local tok, mon = string.match(v, '^(-?%d+):(.*)$')
    if mon ~= '' then
      local mk = mprefix .. mon
      redis.call('HINCRBY', mk, 'rr', -1)
      redis.call('HINCRBY', mk, 'rt', 0 - tonumber(tok))
      redis.call('HINCRBY', mk, 'r', 1)
      redis.call('HINCRBY', mk, 't', tonumber(tok))
    end
    redis.call('HDEL', KEYS[4], old)
  end
  redis.call('ZREM', KEYS[3], old)
end

local r, t = 0, 0
if month ~= '' then
  local m = redis.call('HMGET', KEYS[5], 'seeded', 'r', 't', 'rr', 'rt')
  if not m[1] then return {-1} end
  r, t = tonumber(m[2] or '0'), tonumber(m[3] or '0')
  local rr, rt = tonumber(m[4] or '0'), tonumber(m[5] or '0')
  if mreq > 0 and r + rr >= mreq then
    if r < mreq then return {1, 1} end
    return {1, 0}
  end
  if mtok > 0 then
    local left = mtok - t - rt
    local inflight = 0
    if rt > 0 and prompt + minout <= mtok - t then inflight = 1 end
    if left <= 0 then return {2, inflight} end
    if prompt + minout > left then return {3, inflight, left} end
    output = math.min(output, left - prompt)
  end
end

if maxc > 0 and redis.call('ZCARD', KEYS[3]) >= maxc then return {4} end

local level = 0
if tpm > 0 then
  local b = redis.call('HMGET', KEYS[2], 'l', 'ts')
  level = tonumber(b[1] or '') or tpm
  local last = tonumber(b[2] or '') or now
  if now > last then level = level + (now - last) * tpm / 60000 end
  level = math.min(tpm, level)
  local need = prompt + minout
  if level < need - 1e-9 then return {5, f((need - level) * 60000 / tpm)} end
  output = math.min(output, math.floor(level + 1e-9) - prompt)
end
output = math.max(output, minout)

local remaining, reset = 0, 0
if rps > 0 then
  local em = 1000 / rps
  local tat = tonumber(redis.call('GET', KEYS[1]) or '') or now
  tat = math.max(tat, now)
  local newtat = tat + em
  local allowat = newtat - em * burst
  if now < allowat then return {6, f(allowat - now)} end
  redis.call('SET', KEYS[1], f(newtat), 'PX', math.ceil(newtat - now) + 1000)
  remaining = math.floor((now + em * burst - newtat) / em + 1e-9)
  reset = newtat - now
end

local reserve = prompt + output
if tpm > 0 then
  level = level - reserve
  redis.call('HSET', KEYS[2], 'l', f(level), 'ts', f(now))
  redis.call('PEXPIRE', KEYS[2], math.ceil((tpm - level) * 60000 / tpm) + 60000)
end
redis.call('ZADD', KEYS[3], now + ttl, id)
redis.call('HSET', KEYS[4], id, reserve .. ':' .. month)
redis.call('PEXPIRE', KEYS[3], ttl * 2)
redis.call('PEXPIRE', KEYS[4], ttl * 2)
if month ~= '' then
  redis.call('HINCRBY', KEYS[5], 'rr', 1)
  redis.call('HINCRBY', KEYS[5], 'rt', reserve)
  redis.call('PEXPIRE', KEYS[5], mexp)
end
return {0, output, remaining, f(reset), f(level), r, t}
`

// renewLua extends a lease's slot while its request runs. Returns 0 when
// the lease is gone (settled, or expired while its holder could not renew).
//
// KEYS: 1 slots, 2 res. ARGV: 1 now (0: TIME), 2 lease id, 3 slot ttl.
const renewLua = `
local now = tonumber(ARGV[1])
if now <= 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then return 0 end
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl * 2)
redis.call('PEXPIRE', KEYS[2], ttl * 2)
return 1
`

// settleLua gives a lease's reservation and slot back and, in the same
// step, adds what the request really used to the month's committed totals,
// so each lease feeds them exactly once: a second settle, or one after the
// slot expired (and was counted as used), finds no reservation and changes
// nothing. Tokens the request did not use go back to the tokens-per-minute
// bucket.
//
// KEYS: 1 tpm, 2 slots, 3 res. ARGV: 1 now (0: TIME), 2 lease id,
// 3 tokens used, 4 requests charged (0 or 1), 5 tokens per minute,
// 6 month key prefix, 7 month hash lifetime (ms).
const settleLua = `
local now = tonumber(ARGV[1])
if now <= 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local v = redis.call('HGET', KEYS[3], ARGV[2])
if not v then return 0 end
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[2])
local tok, mon = string.match(v, '^(-?%d+):(.*)$')
tok = tonumber(tok)
local used, charged, tpm = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if mon ~= '' then
  local mk = ARGV[6] .. mon
  redis.call('HINCRBY', mk, 'rr', -1)
  redis.call('HINCRBY', mk, 'rt', 0 - tok)
  redis.call('HINCRBY', mk, 'r', charged)
  redis.call('HINCRBY', mk, 't', used)
  redis.call('PEXPIRE', mk, ARGV[7])
end
if tpm > 0 then
  local b = redis.call('HMGET', KEYS[1], 'l', 'ts')
  if b[1] then
    local level, last = tonumber(b[1]), tonumber(b[2])
    if now > last then level = math.min(tpm, level + (now - last) * tpm / 60000) else now = last end
    level = math.min(tpm, level + tok - used)
    redis.call('HSET', KEYS[1], 'l', string.format('%.17g', level), 'ts', string.format('%.17g', now))
  end
end
return 1
`

// seedLua sets a month's committed totals from the database the first
// time the month is used in this Redis, and never again: the totals then
// grow only by settlements. Anything the hash already holds (an expired
// reservation counted as used) is kept: at worst a request counts twice,
// never not at all.
//
// KEYS: 1 the month's hash. ARGV: 1 requests, 2 tokens, 3 lifetime (ms).
// Returns 1 when it seeded, 0 when the month was already seeded.
const seedLua = `
if redis.call('HEXISTS', KEYS[1], 'seeded') == 1 then return 0 end
redis.call('HINCRBY', KEYS[1], 'r', ARGV[1])
redis.call('HINCRBY', KEYS[1], 't', ARGV[2])
redis.call('HSET', KEYS[1], 'seeded', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`

// addLua adds usage committed while Redis was unreachable (admitted by the
// local fallback) to a seeded month. An unseeded month is left alone: its
// seed reads the database, which has that usage already.
//
// KEYS: 1 the month's hash. ARGV: 1 requests, 2 tokens.
const addLua = `
if redis.call('HEXISTS', KEYS[1], 'seeded') == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'r', ARGV[1])
redis.call('HINCRBY', KEYS[1], 't', ARGV[2])
return 1
`
