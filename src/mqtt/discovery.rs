//! Topics and Home Assistant MQTT discovery payloads: one device per camstream, and per camera
//! a motion `binary_sensor`, an `image` with the last event's picture, sensors for state, frame
//! rate and bitrate, and switches for motion detection and recording. Pure: no I/O.

use serde_json::{Value, json};

/// The topics of one camstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// `topic_prefix/node`: every state topic starts here.
    pub base: String,
    /// Home Assistant's discovery prefix.
    pub discovery: String,
    /// The device's identifier (the client id, reduced to `[A-Za-z0-9_-]`).
    pub node: String,
}

/// What a switch turns on and off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// `motion.enabled`.
    MotionDetection,
    /// `record.enabled`.
    Recording,
}

impl Switch {
    /// Both switches.
    pub const ALL: [Switch; 2] = [Switch::MotionDetection, Switch::Recording];

    /// The topic word and the setting's section.
    pub fn key(self) -> &'static str {
        match self {
            Switch::MotionDetection => "motion_detection",
            Switch::Recording => "recording",
        }
    }

    /// The stream setting's section (`{section: {enabled: ..}}`).
    pub fn section(self) -> &'static str {
        match self {
            Switch::MotionDetection => "motion",
            Switch::Recording => "record",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Switch::MotionDetection => "Motion detection",
            Switch::Recording => "Recording",
        }
    }
}

/// A reduced client id: what unique ids and topic levels may carry.
pub fn node_id(client_id: &str) -> String {
    let s: String = client_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "camstream".into() } else { s }
}

impl Topics {
    /// The topics under `prefix` for the device `node`.
    pub fn new(prefix: &str, discovery: &str, node: &str) -> Self {
        Topics {
            base: format!("{prefix}/{node}"),
            discovery: discovery.to_string(),
            node: node.to_string(),
        }
    }

    /// `online` / `offline`, retained; `offline` is the last will.
    pub fn availability(&self) -> String {
        format!("{}/availability", self.base)
    }

    /// A camera's topic `what` (`motion`, `picture`, `state`, `fps`, `bitrate`, a switch).
    pub fn stream(&self, stream: &str, what: &str) -> String {
        format!("{}/{stream}/{what}", self.base)
    }

    /// A switch's command topic.
    pub fn command(&self, stream: &str, switch: Switch) -> String {
        format!("{}/{stream}/{}/set", self.base, switch.key())
    }

    /// The filter every command topic matches.
    pub fn command_filter(&self) -> String {
        format!("{}/+/+/set", self.base)
    }

    /// The stream and switch a command topic names.
    pub fn parse_command<'a>(&self, topic: &'a str) -> Option<(&'a str, Switch)> {
        let rest = topic.strip_prefix(&self.base)?.strip_prefix('/')?;
        let rest = rest.strip_suffix("/set")?;
        let (stream, key) = rest.split_once('/')?;
        let switch = Switch::ALL.into_iter().find(|s| s.key() == key)?;
        (!stream.is_empty() && !stream.contains('/')).then_some((stream, switch))
    }

    /// Every discovery message of one camera: (topic, retained JSON payload).
    pub fn discovery(&self, device: &Device, stream: &str) -> Vec<(String, Value)> {
        let dev = json!({
            "identifiers": [self.node],
            "name": device.name,
            "manufacturer": "camstream",
            "model": device.model,
            "sw_version": device.version,
        });
        let common = |object: &str, name: &str| -> Value {
            json!({
                "name": format!("{stream} {name}"),
                "unique_id": format!("{}_{stream}_{object}", self.node),
                "object_id": format!("{}_{stream}_{object}", self.node),
                "availability_topic": self.availability(),
                "payload_available": "online",
                "payload_not_available": "offline",
                "device": dev,
            })
        };
        let mut out = Vec::new();
        let mut add = |component: &str, object: &str, name: &str, extra: Value| {
            let mut v = common(object, name);
            if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
                m.extend(e);
            }
            let topic = format!(
                "{}/{component}/{}/{stream}_{object}/config",
                self.discovery, self.node
            );
            out.push((topic, v));
        };
        add(
            "binary_sensor",
            "motion",
            "Motion",
            json!({
                "state_topic": self.stream(stream, "motion"),
                "payload_on": "ON",
                "payload_off": "OFF",
                "device_class": "motion",
            }),
        );
        add(
            "image",
            "picture",
            "Last event",
            json!({
                "image_topic": self.stream(stream, "picture"),
                "content_type": "image/jpeg",
            }),
        );
        add(
            "sensor",
            "state",
            "State",
            json!({
                "state_topic": self.stream(stream, "state"),
                "icon": "mdi:cctv",
            }),
        );
        add(
            "sensor",
            "fps",
            "Frame rate",
            json!({
                "state_topic": self.stream(stream, "fps"),
                "unit_of_measurement": "fps",
                "state_class": "measurement",
            }),
        );
        add(
            "sensor",
            "bitrate",
            "Bitrate",
            json!({
                "state_topic": self.stream(stream, "bitrate"),
                "unit_of_measurement": "kbit/s",
                "device_class": "data_rate",
                "state_class": "measurement",
            }),
        );
        for s in Switch::ALL {
            add(
                "switch",
                s.key(),
                s.name(),
                json!({
                    "state_topic": self.stream(stream, s.key()),
                    "command_topic": self.command(stream, s),
                    "payload_on": "ON",
                    "payload_off": "OFF",
                    "state_on": "ON",
                    "state_off": "OFF",
                }),
            );
        }
        out
    }
}

/// The device as Home Assistant shows it.
#[derive(Debug, Clone)]
pub struct Device {
    /// Its name (`[onvif].name`).
    pub name: String,
    /// Its model (`[onvif].hardware`).
    pub model: String,
    /// camstream's version.
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        let t = Topics::new("camstream", "homeassistant", &node_id("cam pi.1"));
        assert_eq!(t.node, "cam_pi_1");
        for s in Switch::ALL {
            assert_eq!(t.parse_command(&t.command("front", s)), Some(("front", s)));
        }
        assert_eq!(t.parse_command("camstream/cam_pi_1/front/fps/set"), None);
        assert_eq!(t.parse_command("other/cam_pi_1/front/recording/set"), None);
        assert_eq!(t.command_filter(), "camstream/cam_pi_1/+/+/set");
    }

    #[test]
    fn every_entity_has_what_home_assistant_requires() {
        let t = Topics::new("camstream", "homeassistant", "n");
        let d = Device {
            name: "cam".into(),
            model: "camstream".into(),
            version: "1".into(),
        };
        let all = t.discovery(&d, "front");
        assert_eq!(all.len(), 7);
        let mut ids = std::collections::HashSet::new();
        for (topic, v) in &all {
            assert!(topic.starts_with("homeassistant/") && topic.ends_with("/config"));
            assert!(ids.insert(v["unique_id"].as_str().unwrap().to_string()));
            assert_eq!(v["device"]["identifiers"][0], "n");
            assert_eq!(v["availability_topic"], "camstream/n/availability");
            let component = topic.split('/').nth(1).unwrap();
            match component {
                "image" => assert_eq!(v["content_type"], "image/jpeg"),
                "switch" => {
                    assert!(v["command_topic"].as_str().unwrap().ends_with("/set"));
                    assert!(v["state_topic"].is_string());
                }
                _ => assert!(v["state_topic"].is_string(), "{topic}"),
            }
        }
    }
}
