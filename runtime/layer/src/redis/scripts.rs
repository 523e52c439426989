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
/// expiry (channels_redis runs these as two commands).
///
/// KEYS[1] = group key; ARGV[1] = prune-before score.
pub(crate) const GROUP_MEMBERS: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
";
