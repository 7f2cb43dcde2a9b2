//! `clip-edge sources`: the V4L2 cameras on this machine, with the formats
//! and sizes each offers, and a `v4l2:` spec for `watch --source`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use clip_edge::watch::source::v4l2::sys::{self, Device, FrameSize};

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Where the video device nodes are.
    #[arg(long, default_value = "/dev", hide = true)]
    dev_dir: PathBuf,
}

/// What one `/dev/video*` node is.
struct Node {
    path: PathBuf,
    /// A name udev keeps for it across reboots and replugs
    /// (`/dev/v4l/by-id/…`, else `/dev/v4l/by-path/…`): the numbers of two
    /// USB cameras may swap at the next boot.
    stable: Option<PathBuf>,
    /// (card, driver, bus) when the node answered VIDIOC_QUERYCAP.
    identity: Option<(String, String, String)>,
    /// Why it is not a camera to use.
    not_camera: Option<String>,
    formats: Vec<(String, String, Vec<FrameSize>)>,
}

impl Node {
    fn probe(path: &Path, dev_dir: &Path) -> Node {
        let mut node = Node {
            path: path.to_path_buf(),
            stable: stable_name(dev_dir, path),
            identity: None,
            not_camera: None,
            formats: Vec::new(),
        };
        let device = match Device::open(path) {
            Ok(d) => d,
            Err(e) => {
                node.not_camera = Some(format!("cannot open it: {e}"));
                return node;
            }
        };
        let cap = match device.capability() {
            Ok(c) => c,
            Err(e) => {
                node.not_camera = Some(format!("not a V4L2 device ({e})"));
                return node;
            }
        };
        node.identity = Some((
            sys::c_text(&cap.card),
            sys::c_text(&cap.driver),
            sys::c_text(&cap.bus_info),
        ));
        if !Device::captures(&cap) {
            node.not_camera = Some(
                "no single-planar video capture (a metadata or output node, or a multi-planar camera, which v4l2: does not read)"
                    .into(),
            );
            return node;
        }
        for (code, description) in device.formats() {
            node.formats.push((
                sys::fourcc_text(code),
                description,
                device.frame_sizes(code),
            ));
        }
        node
    }

    /// A `v4l2:` spec for this camera: MJPG where offered (the cheapest to
    /// carry), at the largest size up to 1280x720.
    fn suggested(&self) -> Option<String> {
        let usable = ["MJPG", "YUYV", "NV12"];
        let (code, _, sizes) = usable
            .iter()
            .find_map(|u| self.formats.iter().find(|(c, _, _)| c == u))?;
        let fits = |w: u32, h: u32| w <= 1280 && h <= 720;
        let (w, h) = sizes
            .iter()
            .map(|s| match *s {
                FrameSize::Discrete(w, h) => (w, h),
                FrameSize::Range { width, height } => (
                    width[1].min(1280).max(width[0]),
                    height[1].min(720).max(height[0]),
                ),
            })
            .filter(|&(w, h)| fits(w, h))
            .max_by_key(|&(w, h)| w as u64 * h as u64)
            .unwrap_or((640, 480));
        Some(format!(
            "v4l2:{}?width={w}&height={h}&format={code}",
            self.stable.as_ref().unwrap_or(&self.path).display()
        ))
    }
}

/// The udev link to `node` under `dev_dir/v4l/by-id`, else `by-path`.
fn stable_name(dev_dir: &Path, node: &Path) -> Option<PathBuf> {
    let target = std::fs::canonicalize(node).ok()?;
    ["by-id", "by-path"].iter().find_map(|kind| {
        let mut links: Vec<PathBuf> = std::fs::read_dir(dev_dir.join("v4l").join(kind))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|l| std::fs::canonicalize(l).is_ok_and(|t| t == target))
            .collect();
        links.sort();
        links.into_iter().next()
    })
}

fn sizes_text(sizes: &[FrameSize]) -> String {
    if sizes.is_empty() {
        return "(sizes not listed)".into();
    }
    sizes
        .iter()
        .map(|s| match s {
            FrameSize::Discrete(w, h) => format!("{w}x{h}"),
            FrameSize::Range { width, height } => {
                format!("{}x{} to {}x{}", width[0], height[0], width[1], height[1])
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `/dev/video*`, in numeric order.
fn video_nodes(dir: &Path) -> Vec<PathBuf> {
    let mut nodes: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix("video")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, p)| p).collect()
}

pub fn run(a: &Args) -> Result<ExitCode> {
    let nodes: Vec<Node> = video_nodes(&a.dev_dir)
        .iter()
        .map(|p| Node::probe(p, &a.dev_dir))
        .collect();
    if a.json {
        let v: Vec<serde_json::Value> = nodes
            .iter()
            .map(|n| {
                json!({
                    "device": n.path,
                    "stable_name": n.stable,
                    "card": n.identity.as_ref().map(|i| &i.0),
                    "driver": n.identity.as_ref().map(|i| &i.1),
                    "bus": n.identity.as_ref().map(|i| &i.2),
                    "camera": n.not_camera.is_none(),
                    "why_not": n.not_camera,
                    "formats": n.formats.iter().map(|(c, d, s)| json!({
                        "fourcc": c,
                        "description": d,
                        "sizes": s.iter().map(|s| match s {
                            FrameSize::Discrete(w, h) => json!([w, h]),
                            FrameSize::Range { width, height } => json!({"width": width, "height": height}),
                        }).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                    "source": n.suggested(),
                })
            })
            .collect();
        out!("{}", json!({ "v4l2": v }));
        return Ok(ExitCode::SUCCESS);
    }
    if nodes.is_empty() {
        out!("no V4L2 cameras ({}/video*)", a.dev_dir.display());
    }
    for n in &nodes {
        let who = match &n.identity {
            Some((card, driver, bus)) => format!("  {card} ({driver}, {bus})"),
            None => String::new(),
        };
        match &n.not_camera {
            Some(why) => out!("{}{who}: {why}", n.path.display()),
            None => {
                out!("{}{who}", n.path.display());
                if let Some(s) = &n.stable {
                    out!(
                        "  also {} (a name that stays with this camera)",
                        s.display()
                    );
                }
                for (code, description, sizes) in &n.formats {
                    out!("  {code} ({description}): {}", sizes_text(sizes));
                }
                if let Some(s) = n.suggested() {
                    out!("  --source \"{s}\"");
                }
            }
        }
    }
    out!("other sources: rtsp://..., http://... (MJPEG), libcamera: (Pi camera modules), ffmpeg:INPUT, dir:FOLDER, stdin:mjpeg (docs/watch.md)");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_camera_is_named_by_its_udev_link_when_it_has_one() {
        let dir = std::env::temp_dir().join(format!("clip-sources-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("v4l/by-id")).unwrap();
        std::fs::create_dir_all(dir.join("v4l/by-path")).unwrap();
        for n in ["video0", "video2"] {
            std::fs::write(dir.join(n), b"").unwrap();
        }
        let link = |kind: &str, name: &str, to: &str| {
            std::os::unix::fs::symlink(
                format!("../../{to}"),
                dir.join("v4l").join(kind).join(name),
            )
            .unwrap();
        };
        link("by-id", "usb-Logitech_C920_AB12-video-index0", "video2");
        link(
            "by-path",
            "platform-xhci-usb-0:1:1.0-video-index0",
            "video2",
        );
        link(
            "by-path",
            "platform-xhci-usb-0:2:1.0-video-index0",
            "video0",
        );
        assert_eq!(
            stable_name(&dir, &dir.join("video2")),
            Some(dir.join("v4l/by-id/usb-Logitech_C920_AB12-video-index0"))
        );
        assert_eq!(
            stable_name(&dir, &dir.join("video0")),
            Some(dir.join("v4l/by-path/platform-xhci-usb-0:2:1.0-video-index0"))
        );
        std::fs::write(dir.join("video4"), b"").unwrap();
        assert_eq!(stable_name(&dir, &dir.join("video4")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
