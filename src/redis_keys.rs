//! Redis key and channel names, all under the configured prefix.

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

    /// Marker that an event is in the stream (`SET NX EX`), so a batch sent again adds nothing.
    pub fn event_seen_prefix(&self) -> String {
        format!("{}:seen:", self.prefix)
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
