//! Whether a node that cannot reach PostgreSQL is cut off alone, or PostgreSQL is down for every
//! node. Each node records in Redis (the other store it already uses) when it last reached
//! PostgreSQL. A node that cannot renew its leases asks: if another node reached PostgreSQL
//! within the TTL, that node can take the leases over, so this one must stop its cameras; if none
//! did, nobody can take anything over and the cameras keep running through the outage. When Redis
//! does not answer either, the node cannot tell, and stops.

use std::time::Duration;

use crate::redis_keys::RedisKeys;
use crate::sinks::stores::RedisPool;

/// Records (when `node` reached PostgreSQL now) and counts the other nodes that reached it within
/// `ttl`, all on Redis' clock.
const WITNESS: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[2] == '1' then redis.call('HSET', KEYS[1], ARGV[1], now) end
local all = redis.call('HGETALL', KEYS[1])
local others = 0
for i = 1, #all, 2 do
  if all[i] ~= ARGV[1] and now - tonumber(all[i + 1]) < tonumber(ARGV[3]) then others = others + 1 end
end
return others
"#;

#[derive(Clone)]
pub struct Witness {
    redis: RedisPool,
    key: String,
    node: String,
    ttl_ms: u64,
}

impl Witness {
    pub fn new(redis: RedisPool, keys: &RedisKeys, node: &str, ttl: Duration) -> Self {
        Self { redis, key: keys.cluster_witness(), node: node.to_string(), ttl_ms: ttl.as_millis() as u64 }
    }

    /// Records that this node reached PostgreSQL just now.
    pub async fn reached_postgres(&self) -> Result<(), String> {
        self.call(true).await.map(|_| ())
    }

    /// The other nodes that reached PostgreSQL within the TTL.
    pub async fn others_with_postgres(&self) -> Result<u64, String> {
        self.call(false).await
    }

    /// This node left the cluster: it no longer witnesses.
    pub async fn forget(&self) {
        if let Ok(mut conn) = self.redis.get().await {
            let _: Result<(), _> =
                bb8_redis::redis::cmd("HDEL").arg(&self.key).arg(&self.node).query_async(&mut conn).await;
        }
    }

    async fn call(&self, report: bool) -> Result<u64, String> {
        static SCRIPT: std::sync::LazyLock<bb8_redis::redis::Script> =
            std::sync::LazyLock::new(|| bb8_redis::redis::Script::new(WITNESS));
        let mut conn = self.redis.get().await.map_err(|e| e.to_string())?;
        SCRIPT
            .key(&self.key)
            .arg(&self.node)
            .arg(if report { "1" } else { "0" })
            .arg(self.ttl_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| e.to_string())
    }
}
