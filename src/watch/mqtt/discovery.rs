//! Home Assistant MQTT discovery: the retained configs of the entities
//! this node offers (current schema: `default_entity_id`, `origin`).

use super::{slug, Message};

/// A zone's name and the labels it watches, for Home Assistant.
pub type ZoneLabels = (String, Vec<String>);

/// The retained Home Assistant discovery configs: one occupancy binary
/// sensor per watched label (`PREFIX/<label>/state`) and, with zones, one
/// per (zone, label) the zone watches (`PREFIX/<zone>/<label>/state`).
pub(super) fn discovery(
    prefix: &str,
    node: &str,
    labels: &[String],
    zones: &[ZoneLabels],
    configuration_url: Option<&str>,
) -> Vec<Message> {
    let status = format!("{prefix}/status");
    let mut device = serde_json::json!({
        "identifiers": [format!("clip_edge_{}", slug(node))],
        "name": format!("clip-edge {node}"),
        "manufacturer": "clip-edge",
        "model": "CLIP zero-shot camera",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    if let Some(url) = configuration_url {
        device["configuration_url"] = url.into();
    }
    // Who sends the configs (Home Assistant shows it in the device's info).
    let origin = serde_json::json!({
        "name": "clip-edge",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    // One entity's retained config: its fields, plus what every one has.
    // `entity_id` is the id Home Assistant gives it at first
    // (`default_entity_id`; Home Assistant release 2025.10 deprecated object_id).
    let entity = |kind: &str,
                  key: &str,
                  unique_id: String,
                  entity_id: &str,
                  mut config: serde_json::Value| {
        config["unique_id"] = unique_id.into();
        config["default_entity_id"] = format!("{kind}.{entity_id}").into();
        config["availability_topic"] = status.clone().into();
        config["device"] = device.clone();
        config["origin"] = origin.clone();
        Message {
            topic: format!("homeassistant/{kind}/{}/{key}/config", slug(node)),
            payload: config.to_string().into_bytes(),
            retain: true,
            expires: None,
        }
    };
    let sensor = |name: String, key: String, state_topic: String| {
        let id = format!("clip_edge_{}_{key}", slug(node));
        let config = serde_json::json!({
            "name": name,
            "state_topic": state_topic,
            "payload_on": "ON",
            "payload_off": "OFF",
            "device_class": "occupancy",
        });
        entity("binary_sensor", &key, id.clone(), &id, config)
    };
    let mut out = Vec::new();
    for label in labels {
        let s = slug(label);
        out.push(sensor(
            label.clone(),
            s.clone(),
            format!("{prefix}/{s}/state"),
        ));
        // An event entity fired on each start and end, and an image entity
        // showing the latest start's snapshot.
        let id = format!("clip_edge_{}_{s}", slug(node));
        let event = serde_json::json!({
            "name": format!("{label} event"),
            "state_topic": format!("{prefix}/{s}/event"),
            "event_types": ["start", "end"],
        });
        out.push(entity("event", &s, format!("{id}_event"), &id, event));
        let image = serde_json::json!({
            "name": format!("{label} snapshot"),
            "image_topic": format!("{prefix}/{s}/snapshot"),
            "content_type": "image/jpeg",
        });
        out.push(entity("image", &s, format!("{id}_snapshot"), &id, image));
        // The label's live score (for choosing a threshold).
        let score = serde_json::json!({
            "name": format!("{label} score"),
            "state_topic": format!("{prefix}/{s}/score"),
            "state_class": "measurement",
            "suggested_display_precision": 2,
        });
        out.push(entity("sensor", &s, format!("{id}_score"), &id, score));
    }
    for (zone, labels) in zones {
        for label in labels {
            let (z, s) = (slug(zone), slug(label));
            out.push(sensor(
                format!("{zone} {label}"),
                format!("{z}__{s}"),
                format!("{prefix}/{z}/{s}/state"),
            ));
        }
    }
    out
}
