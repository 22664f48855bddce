/**
 * The Lua scripts of the chat repository. Each runs atomically inside Redis and touches the keys
 * of one hash slot only (one chat's, or one tenant's: tenantTurn and the idempotency scripts), so
 * it stays valid on Redis Cluster; the exceptions, beginTurnOnOneNode and commitTurnOnOneNode, which
 * take the tenant's keys after the chat's, are only sent to a single node. Every chat script takes
 * the same keys first, in this order (see `chat-repository.ts` for the layout); commitTurn,
 * clearMessages, setSystem and renewLease take one more, the request's idempotency record (in the
 * chat's slot too):
 *
 *   KEYS[1] meta  KEYS[2] messages  KEYS[3] pairs  KEYS[4] system  KEYS[5] settings
 *   KEYS[6] lease KEYS[7] idempotency record set
 */

/** How many keys every chat script takes. */
export const CHAT_KEY_COUNT = 7;

/**
 * Marks a write: created_at once, updated_at always, and the chat's retention applied to all its
 * keys (the chat's `ttl_days` setting, else the deployment's default; none means keep). Every
 * write applies it to all the keys at once, so they share one state: when none is wanted and the
 * meta hash has no expiry, none of them has, and there is nothing to take off.
 */
const touch = `
local function touch(now, default_ttl_seconds)
  redis.call('HSETNX', KEYS[1], 'created_at', now)
  redis.call('HSET', KEYS[1], 'updated_at', now)
  local days = tonumber(redis.call('HGET', KEYS[5], 'ttl_days') or '')
  local ttl = days and days * 86400 or tonumber(default_ttl_seconds)
  local keep = not (ttl and ttl > 0)
  if keep and redis.call('PTTL', KEYS[1]) == -1 then return end
  for i = 1, 7 do
    if i ~= 6 then
      if keep then redis.call('PERSIST', KEYS[i]) else redis.call('EXPIRE', KEYS[i], ttl) end
    end
  end
end
`;

/** Adds a turn's usage to the tenant's totals and, given a chat id, refreshes its index entry. */
const tenantTurn = `
local function tenant_turn(usage, index, prompt, completion, total, turns, now, chat_id)
  redis.call('HINCRBY', usage, 'prompt_tokens', prompt)
  redis.call('HINCRBY', usage, 'completion_tokens', completion)
  redis.call('HINCRBY', usage, 'total_tokens', total)
  redis.call('HINCRBY', usage, 'turns', turns)
  if chat_id ~= '' then redis.call('ZADD', index, now, chat_id) end
end
`;

/**
 * beginTurn's body, as a function (see beginTurn). A lease already held with this token is taken
 * again: ioredis re-sends a command that was in flight when its connection dropped, and the first
 * copy may have run.
 */
const lease = `
local function take_lease()
  local holder = redis.call('GET', KEYS[6])
  if holder and holder ~= ARGV[1] then return {0, redis.call('PTTL', KEYS[6])} end
  redis.call('SET', KEYS[6], ARGV[1], 'PX', ARGV[2])
  local meta = redis.call('HMGET', KEYS[1], 'gen', 'seq')
  return {1, meta[1] or '0', redis.call('HGETALL', KEYS[5]), redis.call('GET', KEYS[4]), redis.call('LLEN', KEYS[2]),
    meta[2] or '0'}
end
`;

/**
 * Keeps a request's answer in its idempotency record, for replay: the record it claimed, or a new
 * one if that ran out meanwhile (its claim is still listed in the set). A record another body
 * claimed since is left to that request, and one deleted with its chat is not brought back.
 *
 * `done_by` tells whether the record already holds an answer for this body: then this very
 * request's work has run (a claim only ever takes a missing record), and what arrives now is the
 * same command again, sent by ioredis after a dropped connection or late past its timeout.
 */
const completeRecord = `
local function done_by(record, fingerprint)
  local held = redis.call('GET', record)
  if not held then return false end
  local kept = cjson.decode(held)
  return kept.state == 'done' and kept.fingerprint == fingerprint
end

local function complete_record(record, set, fingerprint, response, keep_seconds)
  local held = redis.call('GET', record)
  if held and cjson.decode(held).fingerprint ~= fingerprint then return 0 end
  if not held and redis.call('SISMEMBER', set, record) == 0 then return 0 end
  redis.call('SET', record, cjson.encode({state = 'done', fingerprint = fingerprint, response = response}),
    'EX', keep_seconds)
  return 1
end
`;

/**
 * commitTurn's body, as a function (see commitTurn). The meta hash remembers the lease token of
 * the last turn stored, and of the last one refused for a clear: a commit that ran but whose reply
 * was lost with its connection is sent again by ioredis, and gets the same answer rather than
 * find its lease gone (unless another turn's commit came in between).
 */
const commit = `${completeRecord}
local function commit(record, fingerprint, response, keep_seconds)
  if redis.call('GET', KEYS[6]) ~= ARGV[1] then
    local last = redis.call('HMGET', KEYS[1], 'committed', 'refused')
    if last[1] == ARGV[1] then return {'already_stored'} end
    if last[2] == ARGV[1] then return {'cleared'} end
    return {'lease_lost'}
  end
  redis.call('DEL', KEYS[6])
  if (redis.call('HGET', KEYS[1], 'gen') or '0') ~= ARGV[2] then
    redis.call('HSET', KEYS[1], 'refused', ARGV[1])
    return {'cleared'}
  end
  local next_id = redis.call('HINCRBY', KEYS[1], 'seq', 2) - 2
  if redis.call('LLEN', KEYS[2]) == 0 then redis.call('HSET', KEYS[1], 'base', next_id) end
  redis.call('RPUSH', KEYS[2], '{"id":' .. next_id .. ',' .. string.sub(ARGV[4], 2),
    '{"id":' .. (next_id + 1) .. ',' .. string.sub(ARGV[5], 2))
  redis.call('RPUSH', KEYS[3], ARGV[6])
  redis.call('HINCRBY', KEYS[1], 'prompt_tokens', ARGV[7])
  redis.call('HINCRBY', KEYS[1], 'completion_tokens', ARGV[8])
  redis.call('HINCRBY', KEYS[1], 'total_tokens', ARGV[9])
  redis.call('HINCRBY', KEYS[1], 'turns', 1)
  redis.call('HSET', KEYS[1], 'committed', ARGV[1])
  if response ~= '' then complete_record(record, KEYS[7], fingerprint, response, keep_seconds) end
  touch(ARGV[3], ARGV[10])
  return {'stored', next_id}
end
`;

/** The chat's settings hash as a Lua table. */
const readSettings = `
local function read_settings()
  local flat = redis.call('HGETALL', KEYS[5])
  local settings = {}
  for i = 1, #flat, 2 do settings[flat[i]] = flat[i + 1] end
  return settings
end
`;

export const scripts = {
  /**
   * ARGV token leaseMs
   * -> {0, pttl} when another turn holds the chat; else takes the lease and returns
   *    {1, generation, settings (flat field/value list), chat system prompt or nil, number of
   *     messages, the id the next message will get}.
   * Only small values: the messages are read beside it with LRANGE, as Lua would copy each twice.
   */
  beginTurn: `${lease}
return take_lease()`,

  /**
   * beginTurn on a single node, where the tenant's keys can be read in the same script:
   * KEYS (the chat's seven) the tenant's system prompt  ARGV as beginTurn
   * -> as beginTurn, with the tenant's system prompt (or nil) after the next id.
   */
  beginTurnOnOneNode: `${lease}
local result = take_lease()
if result[1] == 1 then result[7] = redis.call('GET', KEYS[8]) end
return result`,

  /**
   * KEYS (the chat's seven) the request's idempotency record (or, with none, any chat key)
   * ARGV token generation now user assistant pairTokens prompt completion total defaultTtl
   *      response(JSON, or '' with no record) keepSeconds fingerprint
   * (user and assistant are JSON objects without an id; the script gives them the next two ids)
   * -> {'lease_lost'} unless the lease is still ours; {'cleared'} if the chat was cleared since
   *    the turn began; else appends the pair, adds the usage, keeps the response in the record,
   *    releases the lease: {'stored', id}. {'already_stored'} when this very turn was stored
   *    before (the same commit, sent again).
   */
  commitTurn: `${touch}${commit}return commit(KEYS[8], ARGV[13], ARGV[11], ARGV[12])`,

  /**
   * commitTurn on a single node, where the tenant's keys can be written in the same script:
   * KEYS (the chat's seven) usage index (the tenant's) record  ARGV as commitTurn's first ten,
   * then chatId response keepSeconds fingerprint
   * -> as commitTurn; a stored turn's usage is added to the tenant's totals and the chat's index
   *    entry refreshed, in the same step. Never used on a cluster (the tenant's slot differs).
   */
  commitTurnOnOneNode: `${touch}${commit}${tenantTurn}
local result = commit(KEYS[10], ARGV[14], ARGV[12], ARGV[13])
if result[1] == 'stored' then tenant_turn(KEYS[8], KEYS[9], ARGV[7], ARGV[8], ARGV[9], 1, ARGV[3], ARGV[11]) end
return result`,

  /**
   * KEYS usage index marker (the tenant's)  ARGV prompt completion total turns(1 or -1) now
   * chatId(or '') markerMs
   * -> adds a turn's usage to the tenant's totals (turns 1) or takes it back (-1) and, given a chat
   *    id, refreshes the chat's entry in the index. On a cluster it rides beside commitTurn, in the
   *    same round trip. The marker (one per turn, by lease token) makes it safe to send again:
   *    a turn's usage is added once, and taken back only if it was added.
   */
  tenantTurn: `${tenantTurn}
if tonumber(ARGV[4]) > 0 then
  if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[7]) then return 0 end
elseif redis.call('DEL', KEYS[3]) == 0 then return 0 end
tenant_turn(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
return 1`,

  /**
   * KEYS (the chat's seven) the turn request's idempotency record (or, with none, any chat key)
   * ARGV token leaseMs renewRecord('1' or '')
   * -> 1 if the lease was still ours and is extended (with the running record, so a retry waits
   *    for a turn that outlasts the record's first expiry), else 0.
   */
  renewLease: `
if redis.call('GET', KEYS[6]) ~= ARGV[1] then return 0 end
if ARGV[3] == '1' then redis.call('PEXPIRE', KEYS[8], ARGV[2]) end
return redis.call('PEXPIRE', KEYS[6], ARGV[2])`,

  /** ARGV token -> gives the lease back if it is still ours. */
  releaseLease: `
if redis.call('GET', KEYS[6]) == ARGV[1] then return redis.call('DEL', KEYS[6]) end
return 0`,

  /**
   * KEYS (the chat's seven) the request's idempotency record (or, with none, any chat key)
   * ARGV content now defaultTtl response(JSON, or '' with no record) keepSeconds fingerprint
   * -> sets the chat's system prompt, and keeps the request's answer in its record in the same
   *    step (a retry then replays it rather than set the prompt again over a later change, and
   *    the same request's script arriving again does nothing).
   */
  setSystem: `${touch}${completeRecord}
if ARGV[4] ~= '' and done_by(KEYS[8], ARGV[6]) then return 1 end
redis.call('SET', KEYS[4], ARGV[1])
touch(ARGV[2], ARGV[3])
if ARGV[4] ~= '' then complete_record(KEYS[8], KEYS[7], ARGV[6], ARGV[4], ARGV[5]) end
return 1`,

  /**
   * KEYS the tenant's system prompt, the request's idempotency record, the tenant's record set
   * ARGV content response(JSON) keepSeconds fingerprint
   * -> sets the tenant's system prompt, and keeps the request's answer in its record in the same
   *    step (as setSystem; used only with a record). The three keys share the tenant's slot.
   */
  setTenantSystem: `${completeRecord}
if done_by(KEYS[2], ARGV[4]) then return 1 end
redis.call('SET', KEYS[1], ARGV[1])
complete_record(KEYS[2], KEYS[3], ARGV[4], ARGV[2], ARGV[3])
return 1`,

  /**
   * ARGV changes(JSON: field -> value, or false to unset) now defaultTtl
   * -> the chat's settings after the change, as JSON.
   */
  updateSettings: `${touch}${readSettings}
for field, value in pairs(cjson.decode(ARGV[1])) do
  if value == false then redis.call('HDEL', KEYS[5], field) else redis.call('HSET', KEYS[5], field, tostring(value)) end
end
touch(ARGV[2], ARGV[3])
return cjson.encode(read_settings())`,

  /**
   * KEYS (the chat's seven) the request's idempotency record (or, with none, any chat key)
   * ARGV now defaultTtl response(JSON, or '' with no record) keepSeconds fingerprint token
   * -> deletes the messages (the system prompt and settings stay) and moves the generation on, so
   * a turn in flight will not be stored; keeps the request's answer in its record in the same
   * step (a retry then replays it rather than clear again what came after). The same clear
   * arriving again (ioredis re-sends it after a dropped connection) does nothing: the meta hash
   * keeps the last clear's token (one per request), and a keyed clear finds its own done record
   * even after other clears. Like any write, it marks the chat (which exists from then on, empty)
   * and restarts its retention.
   */
  clearMessages: `${touch}${completeRecord}
if redis.call('HGET', KEYS[1], 'cleared') == ARGV[6] or (ARGV[3] ~= '' and done_by(KEYS[8], ARGV[5])) then
  return tonumber(redis.call('HGET', KEYS[1], 'gen') or '0')
end
redis.call('DEL', KEYS[2], KEYS[3])
local generation = redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('HSET', KEYS[1], 'cleared', ARGV[6])
touch(ARGV[1], ARGV[2])
if ARGV[3] ~= '' then complete_record(KEYS[8], KEYS[7], ARGV[5], ARGV[3], ARGV[4]) end
return generation`,

  /** -> deletes every key of the chat, idempotency records included; 1 if it existed. */
  deleteChat: `
local existed = redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[4], KEYS[5])
local records = redis.call('SMEMBERS', KEYS[7])
for _, record in ipairs(records) do redis.call('DEL', record) end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
return existed > 0 and 1 or 0`,

  /**
   * ARGV limit(or '') before(or '') after(or '') maxBytes maxCount
   * -> {firstIndex, lastIndex, length, base, messages}: one page of the history, oldest first.
   * With no limit the page holds as many messages as fit maxBytes (at least one).
   */
  readPage: `
local length = redis.call('LLEN', KEYS[2])
local base = tonumber(redis.call('HGET', KEYS[1], 'base') or '0')
if length == 0 then return {0, -1, 0, base, {}} end
local limit = tonumber(ARGV[1])
local count = limit or tonumber(ARGV[5])
local before, after = tonumber(ARGV[2]), tonumber(ARGV[3])
local first, last, forward
if after then
  first = math.max(after - base + 1, 0)
  last = math.min(first + count - 1, length - 1)
  forward = true
else
  last = length - 1
  if before then last = math.min(before - base - 1, length - 1) end
  first = math.max(last - count + 1, 0)
  forward = false
end
if first > last then return {first, last, length, base, {}} end
local page = redis.call('LRANGE', KEYS[2], first, last)
if not limit then
  local budget = tonumber(ARGV[4])
  local size, keep = 0, 0
  local from, to, step = #page, 1, -1
  if forward then from, to, step = 1, #page, 1 end
  for i = from, to, step do
    size = size + #page[i] + 1
    if size > budget and keep > 0 then break end
    keep = keep + 1
  end
  if keep < #page then
    if forward then
      page = {unpack(page, 1, keep)}
      last = first + keep - 1
    else
      page = {unpack(page, #page - keep + 1, #page)}
      first = last - keep + 1
    end
  end
end
return {first, last, length, base, page}`,

  /** -> {created_at, updated_at, prompt, completion, total, turns, message count, settings JSON} or {} */
  chatInfo: `${readSettings}
local meta = redis.call('HMGET', KEYS[1], 'created_at', 'updated_at', 'prompt_tokens', 'completion_tokens',
  'total_tokens', 'turns')
if not meta[1] then return {} end
return {meta[1], meta[2], meta[3] or '0', meta[4] or '0', meta[5] or '0', meta[6] or '0',
  redis.call('LLEN', KEYS[2]), cjson.encode(read_settings())}`,

  /**
   * KEYS record set  ARGV fingerprint runningMs claimToken
   * -> 'claimed' (and the record is running), or the existing record's JSON. A claim sent again
   * (ioredis re-sends after a dropped connection) finds its own running record, by its token,
   * and is 'claimed' again rather than told its own request is in progress.
   */
  claimIdempotency: `
local record = redis.call('GET', KEYS[1])
if record then
  local held = cjson.decode(record)
  if held.state == 'running' and ARGV[3] ~= '' and held.claim == ARGV[3] then return 'claimed' end
  return record
end
redis.call('SET', KEYS[1], cjson.encode({state = 'running', fingerprint = ARGV[1], claim = ARGV[3]}), 'PX', ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
return 'claimed'`,

  /**
   * KEYS record set  ARGV fingerprint response(JSON) keepSeconds -> 1 once the answer is kept (see
   * complete_record), 0 if another request's body holds the key now.
   */
  completeIdempotency: `${completeRecord}
return complete_record(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])`,

  /**
   * KEYS record set -> drops a running record (its request failed), so a retry runs again; a done
   * one stays: its request's work was written with its answer (a turn whose reply was lost).
   */
  abandonIdempotency: `
local record = redis.call('GET', KEYS[1])
if record and cjson.decode(record).state == 'done' then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], KEYS[1])
return 1`,
} as const;

/** How many keys each script takes (the idempotency scripts work on a record, not a chat). */
export const scriptKeyCounts: Readonly<Record<keyof typeof scripts, number>> = {
  beginTurn: CHAT_KEY_COUNT,
  beginTurnOnOneNode: CHAT_KEY_COUNT + 1,
  commitTurn: CHAT_KEY_COUNT + 1,
  commitTurnOnOneNode: CHAT_KEY_COUNT + 3,
  tenantTurn: 3,
  renewLease: CHAT_KEY_COUNT + 1,
  releaseLease: CHAT_KEY_COUNT,
  setSystem: CHAT_KEY_COUNT + 1,
  setTenantSystem: 3,
  updateSettings: CHAT_KEY_COUNT,
  clearMessages: CHAT_KEY_COUNT + 1,
  deleteChat: CHAT_KEY_COUNT,
  readPage: CHAT_KEY_COUNT,
  chatInfo: CHAT_KEY_COUNT,
  claimIdempotency: 2,
  completeIdempotency: 2,
  abandonIdempotency: 2,
};
