package limits

// The Lua scripts of the Redis limiter. Each runs atomically in Redis, so
// one admission checks and takes every limit of a key, and of its account,
// at once, whatever the number of replicas. All of a key's Redis keys share
// the hash tag {keyID}, and an account's the tag {a:accountID}; an
// admission of a key in an account touches both, so the limiter needs one
// Redis (a primary, with replicas if wanted), not a Cluster. Times are
// milliseconds since the Unix epoch, from Redis's own clock (TIME) unless
// ARGV[1] overrides it (tests). Numbers that may have fractions come back
// as strings: Redis truncates Lua numbers to integers. Money is in
// micro-units; Lua's numbers are doubles, exact below 2^53, and the
// limiter keeps every amount a script computes below that (see
// exactLimit).
//
// A reservation is held twice when the key is in an account: once in the
// key's registry (slots: a sorted set of lease id -> expiry, res: a hash of
// lease id -> "tokens:cost:month") against the key's month, and once in the
// account's (its own slots and res) against the account's month. Each
// registry frees its expired reservations itself, counting them as used,
// on the next admission that reads it: the account's on the next request of
// any of its keys.

// luaCommon are the helpers every script starts with.
const luaCommon = `
local now = tonumber(ARGV[1])
if now <= 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local function f(x) return string.format('%.17g', x) end
local function d(x) return string.format('%d', x) end
local function parse(v)
  local tok, cost, mon = string.match(v, '^(-?%d+):(-?%d+):(.*)$')
  if not tok then
    tok, mon = string.match(v, '^(-?%d+):(.*)$')
    cost = '0'
  end
  return tonumber(tok), tonumber(cost), mon
end
local function keep(k, ms)
  local left = redis.call('PTTL', k)
  if left ~= -2 and left < ms then redis.call('PEXPIRE', k, ms) end
end
-- expire frees the reservations of a registry whose holder stopped
-- renewing them (a crashed replica), counting them as used: the request
-- may have been committed, and a quota must not be exceeded.
local function expire(slots, res, mprefix)
  local old = redis.call('ZRANGEBYSCORE', slots, '-inf', now)
  for _, id in ipairs(old) do
    local v = redis.call('HGET', res, id)
    if v then
      local tok, cost, mon = parse(v)
      if mon ~= '' then
        local mk = mprefix .. mon
        redis.call('HINCRBY', mk, 'rr', -1)
        redis.call('HINCRBY', mk, 'rt', d(0 - tok))
        redis.call('HINCRBY', mk, 'r', 1)
        redis.call('HINCRBY', mk, 't', d(tok))
        if cost ~= 0 then
          redis.call('HINCRBY', mk, 'rc', d(0 - cost))
          redis.call('HINCRBY', mk, 'c', d(cost))
        end
      end
      redis.call('HDEL', res, id)
    end
    redis.call('ZREM', slots, id)
  end
end
`

// admitLua checks the key's monthly quotas and budget, then its account's,
// then the key's concurrency slots, tokens-per-minute bucket and request
// rate (a GCRA), in that order (Limiter.Admit's), and only when all pass
// takes them: reservations (in the key's registry and, with an account,
// in the account's) that expire unless renewed, a slot, the tokens, and
// the rate. Expired reservations are freed first.
//
// KEYS: 1 gcra (string: theoretical arrival time), 2 tpm (hash: l level,
// ts last refill), 3 slots (zset: lease id -> expiry), 4 res (hash: lease
// id -> "tokens:cost:month"), 5 the key's month hash (r, t, c committed
// requests, tokens, cost; rr, rt, rc reserved; seeded, cs: seeded from the
// database, cs for the cost), and with an account 6 its slots, 7 its res,
// 8 its month hash (the same fields; seeded covers all three).
// ARGV: 1 now (0: TIME), 2 lease id, 3 requests per second, 4 burst,
// 5 tokens per minute, 6 max concurrent, 7 monthly requests, 8 monthly
// tokens, 9 prompt, 10 output, 11 min output, 12 slot ttl, 13 month
// ("" when the key has no monthly limit), 14 the key's month key prefix,
// 15 month hash lifetime (ms), 16 the key's monthly budget, 17 the
// account's monthly requests, 18 its monthly tokens, 19 its monthly
// budget, 20 the account's month key prefix, 21 the prompt's price (prompt
// tokens times input price per 1k), 22 output price per 1k. Costs are
// reserved only when a budget (the key's or the account's) is set.
//
// Returns {0, output, remaining requests, reset requests ms, tokens level,
// committed requests, tokens, cost of the key, then of the account} on
// success, or a refusal: {-1} the key's month is not seeded yet; {-2} the
// account's; {1, in flight, 0, who} request quota; {2, in flight, 0, who}
// token quota used; {3, in flight, left, who} token quota short; {4}
// concurrency; {5, wait ms} tokens per minute; {6, wait ms} rate; {7, in
// flight, left, who} budget. who is 0 for the key, 1 for its account.
const admitLua = luaCommon + `
local id = ARGV[2]
local rps, burst, tpm, maxc = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local mreq, mtok = tonumber(ARGV[7]), tonumber(ARGV[8])
local prompt, output, minout = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local ttl, month, mprefix, mexp = tonumber(ARGV[12]), ARGV[13], ARGV[14], tonumber(ARGV[15])
local mbud = tonumber(ARGV[16])
local areq, atok, abud, aprefix = tonumber(ARGV[17]), tonumber(ARGV[18]), tonumber(ARGV[19]), ARGV[20]
local pin, pout = tonumber(ARGV[21]), tonumber(ARGV[22])
local acct = #KEYS >= 8
local priced = mbud > 0 or (acct and abud > 0)

-- cost is Price.Cost(prompt, o): (prompt price + o * output price) / 1000,
-- rounded half up, exact while the sum stays below 2^53.
local function cost(o)
  local x = pin + o * pout + 500
  local q = math.floor(x / 1000)
  if q * 1000 > x then q = q - 1 elseif (q + 1) * 1000 <= x then q = q + 1 end
  return q
end

-- quotas checks a month's request and token quotas and budget and returns
-- the output cap they leave, or a refusal.
local function quotas(m, lreq, ltok, lbud, who)
  local r, t, c = tonumber(m[2] or '0'), tonumber(m[3] or '0'), tonumber(m[4] or '0')
  local rr, rt, rc = tonumber(m[5] or '0'), tonumber(m[6] or '0'), tonumber(m[7] or '0')
  if lreq > 0 and r + rr >= lreq then
    if r < lreq then return nil, {1, 1, 0, who} end
    return nil, {1, 0, 0, who}
  end
  if ltok > 0 then
    local left = ltok - t - rt
    local inflight = 0
    if rt > 0 and prompt + minout <= ltok - t then inflight = 1 end
    if left <= 0 then return nil, {2, inflight, 0, who} end
    if prompt + minout > left then return nil, {3, inflight, left, who} end
    output = math.min(output, left - prompt)
  end
  if lbud > 0 then
    local left = lbud - c - rc
    local need = cost(minout)
    local inflight = 0
    if rc > 0 and need <= lbud - c and c < lbud then inflight = 1 end
    if left <= 0 or need > left then return nil, {7, inflight, d(math.max(0, left)), who} end
    if cost(output) > left and pout > 0 then
      -- the largest o with prompt price + o * output price + 500 < 1000 * (left + 1)
      local y = 1000 * (left + 1) - 501 - pin
      local k = math.floor(y / pout)
      if k * pout > y then k = k - 1 elseif (k + 1) * pout <= y then k = k + 1 end
      output = math.max(minout, math.min(output, k))
    end
  end
  return {r, t, c}, nil
end

expire(KEYS[3], KEYS[4], mprefix)
if acct then expire(KEYS[6], KEYS[7], aprefix) end

local kc, ac = {0, 0, 0}, {0, 0, 0}
if month ~= '' then
  local m = redis.call('HMGET', KEYS[5], 'seeded', 'r', 't', 'c', 'rr', 'rt', 'rc', 'cs')
  if not m[1] or not m[8] then return {-1} end
  local got, no = quotas(m, mreq, mtok, mbud, 0)
  if no then return no end
  kc = got
end
if acct then
  local m = redis.call('HMGET', KEYS[8], 'seeded', 'r', 't', 'c', 'rr', 'rt', 'rc')
  if not m[1] then return {-2} end
  local got, no = quotas(m, areq, atok, abud, 1)
  if no then return no end
  ac = got
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
local rcost = 0
if priced then rcost = cost(output) end
if tpm > 0 then
  level = level - reserve
  redis.call('HSET', KEYS[2], 'l', f(level), 'ts', f(now))
  redis.call('PEXPIRE', KEYS[2], math.ceil((tpm - level) * 60000 / tpm) + 60000)
end
-- A registry holding month reservations lives as long as the month's
-- totals, so that a crashed replica's reservations are still there to be
-- freed (and counted) however long the key stays idle.
-- (mexp is the time to one fixed instant, after the month ends: it never
-- shortens a registry's life.)
redis.call('ZADD', KEYS[3], now + ttl, id)
redis.call('HSET', KEYS[4], id, d(reserve) .. ':' .. d(rcost) .. ':' .. month)
if month ~= '' then
  redis.call('PEXPIRE', KEYS[3], mexp)
  redis.call('PEXPIRE', KEYS[4], mexp)
  redis.call('HINCRBY', KEYS[5], 'rr', 1)
  redis.call('HINCRBY', KEYS[5], 'rt', d(reserve))
  if rcost ~= 0 then redis.call('HINCRBY', KEYS[5], 'rc', d(rcost)) end
  redis.call('PEXPIRE', KEYS[5], mexp)
else
  keep(KEYS[3], ttl * 2)
  keep(KEYS[4], ttl * 2)
end
if acct then
  local amonth = string.sub(KEYS[8], #aprefix + 1)
  redis.call('ZADD', KEYS[6], now + ttl, id)
  redis.call('HSET', KEYS[7], id, d(reserve) .. ':' .. d(rcost) .. ':' .. amonth)
  redis.call('PEXPIRE', KEYS[6], mexp)
  redis.call('PEXPIRE', KEYS[7], mexp)
  redis.call('HINCRBY', KEYS[8], 'rr', 1)
  redis.call('HINCRBY', KEYS[8], 'rt', d(reserve))
  if rcost ~= 0 then redis.call('HINCRBY', KEYS[8], 'rc', d(rcost)) end
  redis.call('PEXPIRE', KEYS[8], mexp)
end
return {0, output, remaining, f(reset), f(level), kc[1], kc[2], kc[3], ac[1], ac[2], ac[3]}
`

// renewLua extends a lease's reservations while its request runs: in the
// key's registry and, with an account, in the account's. Returns 0 when
// the lease is gone from the key's (settled, or expired while its holder
// could not renew).
//
// KEYS: 1 slots, 2 res, and with an account 3 its slots, 4 its res.
// ARGV: 1 now (0: TIME), 2 lease id, 3 slot ttl.
const renewLua = luaCommon + `
local ttl = tonumber(ARGV[3])
if #KEYS >= 4 and redis.call('HEXISTS', KEYS[4], ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[3], 'XX', now + ttl, ARGV[2])
end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[2])
keep(KEYS[1], ttl * 2)
keep(KEYS[2], ttl * 2)
return 1
`

// settleLua gives a lease's reservations and slot back and, in the same
// step, adds what the request really used (requests, tokens, cost) to the
// month's committed totals of the key and of its account, so each lease
// feeds each total exactly once: a second settle, or one after a
// reservation expired (and was counted as used), finds no reservation and
// changes nothing. Tokens the request did not use go back to the
// tokens-per-minute bucket.
//
// KEYS: 1 tpm, 2 slots, 3 res, and with an account 4 its slots, 5 its res.
// ARGV: 1 now (0: TIME), 2 lease id, 3 tokens used, 4 requests charged
// (0 or 1), 5 tokens per minute, 6 the key's month key prefix, 7 month
// hash lifetime (ms), 8 cost, 9 the account's month key prefix.
const settleLua = luaCommon + `
local used, charged, tpm, cost = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[8]
local function give(slots, res, mprefix)
  local v = redis.call('HGET', res, ARGV[2])
  if not v then return nil end
  redis.call('HDEL', res, ARGV[2])
  redis.call('ZREM', slots, ARGV[2])
  local tok, rcost, mon = parse(v)
  if mon ~= '' then
    local mk = mprefix .. mon
    redis.call('HINCRBY', mk, 'rr', -1)
    redis.call('HINCRBY', mk, 'rt', d(0 - tok))
    if rcost ~= 0 then redis.call('HINCRBY', mk, 'rc', d(0 - rcost)) end
    redis.call('HINCRBY', mk, 'r', charged)
    redis.call('HINCRBY', mk, 't', d(used))
    if cost ~= '0' then redis.call('HINCRBY', mk, 'c', cost) end
    redis.call('PEXPIRE', mk, ARGV[7])
  end
  return tok
end
if #KEYS >= 5 then give(KEYS[4], KEYS[5], ARGV[9]) end
local tok = give(KEYS[2], KEYS[3], ARGV[6])
if not tok then return 0 end
if tpm > 0 then
  local b = redis.call('HMGET', KEYS[1], 'l', 'ts')
  if b[1] then
    local level, last = tonumber(b[1]), tonumber(b[2])
    if now > last then level = math.min(tpm, level + (now - last) * tpm / 60000) else now = last end
    level = math.min(tpm, level + tok - used)
    redis.call('HSET', KEYS[1], 'l', f(level), 'ts', f(now))
  end
end
return 1
`

// seedLua sets a month's committed totals from the database the first
// time the month is used in this Redis, and never again: the totals then
// grow only by settlements. Anything the hash already holds (an expired
// reservation counted as used) is kept: at worst a request counts twice,
// never not at all. A month seeded before costs were kept (no cs) gets its
// cost once.
//
// KEYS: 1 the month's hash. ARGV: 1 requests, 2 tokens, 3 lifetime (ms),
// 4 cost.
// Returns 1 when it seeded, 0 when the month was already seeded.
const seedLua = `
local did = 0
if redis.call('HEXISTS', KEYS[1], 'seeded') == 0 then
  redis.call('HINCRBY', KEYS[1], 'r', ARGV[1])
  redis.call('HINCRBY', KEYS[1], 't', ARGV[2])
  redis.call('HSET', KEYS[1], 'seeded', 1)
  did = 1
end
if redis.call('HEXISTS', KEYS[1], 'cs') == 0 then
  redis.call('HINCRBY', KEYS[1], 'c', ARGV[4])
  redis.call('HSET', KEYS[1], 'cs', 1)
  did = 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return did
`

// addLua adds usage committed while Redis was unreachable (admitted by the
// local fallback) to seeded months: the key's and, when given, its
// account's. An unseeded month is left alone: its seed reads the
// database, which has that usage already.
//
// KEYS: 1 the key's month hash, 2 (optional) the account's. ARGV: 1
// requests, 2 tokens, 3 cost.
const addLua = `
for _, k in ipairs(KEYS) do
  if redis.call('HEXISTS', k, 'seeded') == 1 then
    redis.call('HINCRBY', k, 'r', ARGV[1])
    redis.call('HINCRBY', k, 't', ARGV[2])
    if redis.call('HEXISTS', k, 'cs') == 1 then redis.call('HINCRBY', k, 'c', ARGV[3]) end
  end
end
return 1
`
