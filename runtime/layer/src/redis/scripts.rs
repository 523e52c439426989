//! The Lua scripts the layer runs, each one atomic round trip.

/// `send` (`docs/channels_redis_wire.md` 1.5) in one step: prune expired
/// messages, refuse when the key holds `capacity` messages or more, else add
/// and reset the key's TTL.
///
/// KEYS[1] = channel key; ARGV = member, score, capacity, prune-before, expiry.
/// Returns 1 when added, 0 when full. channels_redis runs the same four commands
/// unpipelined; one script is the same effect without the race.
pub(crate) const SEND: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[4])
if redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') >= tonumber(ARGV[3]) then
    return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
";

/// channels_redis's group-send script (`docs/channels_redis_wire.md` 1.9),
/// preceded by the expiry prune that channels_redis runs in a separate
/// pipeline (here on the right shard).
///
/// KEYS = the channel keys of one shard; ARGV = n messages, n capacities, the
/// score, the expiry, the prune-before score. Returns, per key, 1 when the
/// entry was added and 0 when the key was full (channels_redis returns only the
/// count of full keys).
pub(crate) const GROUP_SEND: &str = r"
local n = #KEYS
local t = ARGV[2 * n + 1]
local expiry = ARGV[2 * n + 2]
local prune = ARGV[2 * n + 3]
local added = {}
for i = 1, n do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, prune)
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[i + n]) then
        redis.call('ZADD', KEYS[i], t, ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
        added[i] = 1
    else
        added[i] = 0
    end
end
return added
";

/// The members of a group after dropping memberships older than the group
/// expiry (channels_redis runs these as two commands), and whether this process's
/// heartbeat key exists on that host: when it does not, Redis lost this
/// process's records since its last beat (a restart, a flush), so other
/// processes' memberships may be missing too.
///
/// KEYS[1] = group key, KEYS[2] = this process's heartbeat key; ARGV[1] =
/// prune-before score. Returns `{alive (0 or 1), {member, ...}}`.
pub(crate) const GROUP_MEMBERS_AND_ALIVE: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
return {redis.call('EXISTS', KEYS[2]), redis.call('ZRANGE', KEYS[1], 0, -1)}
";

/// One heartbeat: renews this process's heartbeat key if it exists (it is
/// created only by a re-add of this process's memberships, so its presence
/// means they are in Redis), records the process in the registry, and reads
/// the resync counter.
///
/// KEYS[1] = heartbeat key, KEYS[2] = registry, KEYS[3] = resync counter;
/// ARGV = TTL in ms, the process's inbox name, the score (now). Returns
/// `{alive (0 or 1), counter ('' when absent)}`.
pub(crate) const HEARTBEAT: &str = r"
local alive = redis.call('EXISTS', KEYS[1])
if alive == 1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
    redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
end
return {alive, redis.call('GET', KEYS[3]) or ''}
";

/// Removes the group members of every registered Switchyard process whose
/// heartbeat key has expired: only members whose name starts with that
/// process's inbox name, only in the groups its record lists; then its
/// record, its registry entry and its inbox key (nobody will pop it). A
/// process that never registered (a Django process) is never touched.
///
/// KEYS[1] = registry; ARGV = the key prefix, this process's inbox name.
/// The other keys are built here from the prefix (a single Redis, not a
/// cluster, as channels_redis requires). Returns `{{purged inbox, ...},
/// {members removed, ...}, {live inbox, ...}}`.
pub(crate) const PURGE_DEAD: &str = r"
local prefix = ARGV[1]
local purged = {}
local removed_counts = {}
local live = {}
for _, inbox in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if inbox == ARGV[2] or redis.call('EXISTS', prefix .. ':switchyard:alive:' .. inbox) == 1 then
        table.insert(live, inbox)
    else
        local record = prefix .. ':switchyard:groups:' .. inbox
        local removed = 0
        for _, group in ipairs(redis.call('SMEMBERS', record)) do
            local key = prefix .. ':group:' .. group
            for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
                if string.sub(member, 1, #inbox) == inbox then
                    redis.call('ZREM', key, member)
                    removed = removed + 1
                end
            end
        end
        redis.call('DEL', record, prefix .. inbox)
        redis.call('ZREM', KEYS[1], inbox)
        table.insert(purged, inbox)
        table.insert(removed_counts, removed)
    end
end
return {purged, removed_counts, live}
";
