//! `clip-edge info`: what a bundle's manifest says, once its checksums match.

use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use super::BundleArg;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    bundle: BundleArg,
    /// One JSON object: the manifest's fields and the checksums' result.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &Args) -> Result<ExitCode> {
    let &Args {
        ref bundle,
        json: json_out,
    } = a;
    let b = bundle.open()?;
    let dir = &bundle.bundle;
    let m = &b.manifest;
    if json_out {
        let mut v = serde_json::to_value(m)?;
        v["checksums"] = json!("ok");
        // Always present here, where the manifest leaves the defaults out.
        v["scoring"] = json!(m.scoring.to_string());
        v["logit_bias"] = json!(m.logit_bias);
        v["native"] = json!(m.native);
        let kernels = clip_edge::kernels::Kernels::detect();
        v["kernels"] = json!(kernels.name);
        // The layout `native[].kernels` names (the section this CPU reads).
        v["packing"] = json!(kernels.packing().name);
        out!("{v}");
    } else {
        out!(
            "bundle {} (format {}, written by {} with tract {})",
            dir.display(),
            m.format_version,
            m.created_by,
            m.tract_version
        );
        out!(
            "  model      {} ({}), embed dim {}, {} px",
            m.model.architecture,
            m.model.family,
            m.model.embed_dim,
            m.preprocess.resolution
        );
        out!(
            "  source     {} ({}), sha256 {}",
            m.source.checkpoint,
            m.source.format,
            m.source.sha256
        );
        out!(
            "  precision  {} (activations {})",
            m.precision,
            m.activation
        );
        match m.scoring {
            clip_edge::bundle::Scoring::Softmax => {
                out!(
                    "  scoring    softmax over the labels, logit scale {}",
                    m.logit_scale
                )
            }
            clip_edge::bundle::Scoring::Sigmoid => out!(
                "  scoring    sigmoid per label, logit scale {}, bias {}",
                m.logit_scale,
                m.logit_bias
            ),
        }
        out!(
            "  labels     {} ({} template(s)), table {} [{}x{}]",
            m.labels.len(),
            m.templates.len(),
            m.table.dtype,
            m.table.rows,
            m.table.dim
        );
        out!(
            "  report     cosine mean {:.6} min {:.6}, top-1 agreement {:.1}%",
            m.report.cosine_mean,
            m.report.cosine_min,
            100.0 * m.report.top1_agreement
        );
        out!("  checksums  ok ({} files)", m.files.len());
        if m.native.is_empty() {
            out!("  native     no sections");
        } else {
            let this = clip_edge::kernels::Kernels::detect().packing().name;
            let list: Vec<String> = m
                .native
                .iter()
                .map(|n| {
                    let mark = if n.kernels == this { " (this CPU)" } else { "" };
                    format!("{}{mark} {:.1} MB", n.kernels, n.bytes as f64 / 1e6)
                })
                .collect();
            out!("  native     sections for {}", list.join(", "));
        }
        out!("labels:");
        let mut line = String::from(" ");
        for (n, l) in m.labels.iter().enumerate() {
            let item = if n + 1 < m.labels.len() {
                format!(" {l},")
            } else {
                format!(" {l}")
            };
            if line.len() + item.len() > 78 && line.len() > 1 {
                out!("{line}");
                line = String::from(" ");
            }
            line.push_str(&item);
        }
        out!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
