//! Redis key and channel names, all under the configured prefix. The prefix holds no `{` or `}`
//! (validated), so the only hash tag (Redis Cluster) is the one `event_seen` puts there on purpose.

#[derive(Debug, Clone)]
pub struct RedisKeys {
    prefix: String,
}

impl RedisKeys {
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_string() }
    }

    /// Stream of every event, for consumers that must not miss any (XREAD / consumer groups).
    pub fn events_stream(&self) -> String {
        format!("{}:events", self.prefix)
    }

    /// Pub/sub channel of one camera's events, for live consumers.
    pub fn camera_channel(&self, camera_id: &str) -> String {
        format!("{}:events:{camera_id}", self.prefix)
    }

    /// Pattern of every camera's channel, for the live event stream of the API.
    pub fn all_cameras_pattern(&self) -> String {
        format!("{}:events:*", self.prefix)
    }

    /// Marker that an event is in the stream (`SET NX EX`), so a batch sent again adds nothing:
    /// `{prefix}:seen:{{prefix}:events}:{event_id}`. Its hash tag is the stream's key, so on a
    /// Redis Cluster every marker lives in the stream's slot and one script can touch them all.
    pub fn event_seen(&self, event_id: &str) -> String {
        format!("{}:seen:{{{}}}:{event_id}", self.prefix, self.events_stream())
    }

    /// Stream and channel of service events that belong to no camera (model transitions).
    pub fn system_stream(&self) -> String {
        format!("{}:system", self.prefix)
    }

    /// Hash of node id -> when (Redis clock, ms) it last reached PostgreSQL: the cluster's
    /// witness of whether a PostgreSQL outage is everyone's or one node's.
    pub fn cluster_witness(&self) -> String {
        format!("{}:cluster:postgres_ok", self.prefix)
    }

    /// Hash of a camera's latest state (field `state`: JSON; `updated_at`: RFC 3339).
    pub fn camera_state(&self, camera_id: &str) -> String {
        format!("{}:state:{camera_id}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis Cluster's key slot (CRC16/XMODEM of the hash tag, or of the key without one).
    fn slot(key: &str) -> u16 {
        let tag = match (key.find('{'), key.find('{').and_then(|open| key[open + 1..].find('}').map(|n| open + 1 + n)))
        {
            (Some(open), Some(close)) if close > open + 1 => &key[open + 1..close],
            _ => key,
        };
        let mut crc: u16 = 0;
        for byte in tag.bytes() {
            crc ^= u16::from(byte) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
            }
        }
        crc % 16384
    }

    #[test]
    fn markers_share_the_stream_slot() {
        let keys = RedisKeys::new("its");
        assert_eq!(keys.event_seen("abc"), "its:seen:{its:events}:abc");
        // The reference value of the cluster specification: "123456789" -> 0x31C3.
        assert_eq!(slot("123456789"), 0x31C3);
        for id in ["0b3e9c1e-1d2f-5a6b-8c7d-9e0f1a2b3c4d", "x", "{odd}"] {
            assert_eq!(slot(&keys.event_seen(id)), slot(&keys.events_stream()), "{id}");
        }
    }
}
