//! Writing a bundle: the graph, the table, the report and the manifest
//! into a temporary sibling, then moved into place whole.

use super::*;

/// What a bundle holds besides what the build options say.
pub(super) struct Contents {
    pub(super) model: TypedModel,
    pub(super) table: Vec<f32>,
    /// "f32" or "f16".
    pub(super) table_dtype: &'static str,
    pub(super) labels: Vec<String>,
    pub(super) templates: Vec<String>,
    pub(super) summary: ReportSummary,
    /// Per calibration/eval image: file and cosine to fp32.
    pub(super) per_image: Vec<(String, f64)>,
    pub(super) sensitivity: Vec<(String, f64)>,
    pub(super) logit_scale: f32,
    /// Where the model (and its logit scale) came from.
    pub(super) source_path: PathBuf,
    pub(super) source: Source,
    pub(super) model_info: ModelInfo,
    pub(super) preprocess: PreprocessInfo,
    pub(super) layers: Vec<LayerPrecision>,
}

/// Each image's file and cosine to fp32.
pub(super) fn per_image(files: &[PathBuf], cos: &[f64]) -> Vec<(String, f64)> {
    files
        .iter()
        .map(|p| p.display().to_string())
        .zip(cos.iter().copied())
        .collect()
}

pub(super) fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub(super) fn sha256_of(p: &Path) -> Result<String, BuildError> {
    fmt::sha256_file(p).map_err(|e| BuildError::Input {
        path: p.to_path_buf(),
        why: e.to_string(),
    })
}

/// Writes the bundle into a temporary sibling of `opts.out`, then moves it
/// into place: the graph, the table, the report and the manifest (signed
/// with `signing_key`).
pub(super) fn write_bundle(
    opts: &BuildOptions,
    start: Instant,
    signing_key: Option<&signature::SigningKey>,
    c: Contents,
) -> Result<Report, BuildError> {
    let out = &opts.out;
    let e = c.model_info.embed_dim;
    let logit_scale = opts.scoring.scale(c.logit_scale, &c.source_path)?;
    let report = crate::atomic::write_dir(out, |tmp| -> Result<Report, BuildError> {
        crate::nnef::write_nnef_tgz(&c.model, &tmp.join(fmt::IMAGE_ENCODER))?;
        write_table(
            &tmp.join(fmt::TEXT_TABLE),
            &c.table,
            c.labels.len(),
            e,
            c.table_dtype,
        )?;
        let mut report = Report {
            precision: opts.precision.to_string(),
            activation: activation_name(opts.activation).into(),
            summary: c.summary.clone(),
            per_image: c.per_image.clone(),
            sensitivity: c.sensitivity.clone(),
            bundle_bytes: 0,
            seconds: 0.0,
        };
        let mut files_sha = BTreeMap::new();
        for f in [fmt::IMAGE_ENCODER, fmt::TEXT_TABLE] {
            files_sha.insert(
                f.to_string(),
                fmt::sha256_file(&tmp.join(f)).map_err(|e| BuildError::Input {
                    path: tmp.join(f),
                    why: e.to_string(),
                })?,
            );
        }
        let size: u64 = files_sha
            .keys()
            .map(|f| std::fs::metadata(tmp.join(f)).map(|m| m.len()).unwrap_or(0))
            .sum();
        report.bundle_bytes = size;
        report.seconds = start.elapsed().as_secs_f64();
        let report_json = serde_json::to_vec_pretty(&report).expect("report serialises");
        std::fs::write(tmp.join(fmt::REPORT), &report_json).map_err(io(&tmp.join(fmt::REPORT)))?;
        files_sha.insert(fmt::REPORT.to_string(), fmt::sha256_hex(&report_json));
        let mut manifest = Manifest {
            // Set below, from what the manifest holds.
            format_version: 0,
            tract_version: TRACT_VERSION.to_string(),
            created_by: format!("clip-quantize {}", env!("CARGO_PKG_VERSION")),
            precision: opts.precision.to_string(),
            activation: activation_name(opts.activation).into(),
            logit_scale,
            scoring: opts.scoring.scoring,
            logit_bias: opts.scoring.logit_bias.unwrap_or(0.0),
            labels: c.labels.clone(),
            templates: c.templates.clone(),
            source: c.source.clone(),
            model: c.model_info.clone(),
            preprocess: c.preprocess.clone(),
            table: TableInfo {
                file: fmt::TEXT_TABLE.into(),
                dtype: c.table_dtype.into(),
                rows: c.labels.len(),
                dim: e,
            },
            report: c.summary.clone(),
            layers: c.layers.clone(),
            files: files_sha,
            native: Vec::new(),
        };
        manifest.format_version = manifest.needed_format();
        let text = toml::to_string(&manifest).map_err(|e| BuildError::Input {
            path: tmp.join(fmt::MANIFEST),
            why: e.to_string(),
        })?;
        std::fs::write(tmp.join(fmt::MANIFEST), &text).map_err(io(&tmp.join(fmt::MANIFEST)))?;
        if let Some(key) = signing_key {
            let sig = tmp.join(signature::SIGNATURE);
            std::fs::write(&sig, signature::sign(key, text.as_bytes())).map_err(io(&sig))?;
        }
        // Opened as clip-edge opens it (its size limits, checksums, the
        // table's shape, the signature): a bundle no board would take is
        // not put in place.
        let trust = clip_edge::bundle::Trust {
            require_signature: signing_key.map(|k| k.verifying_key()),
        };
        if let Err(e) = clip_edge::bundle::Bundle::open_with(tmp, &trust) {
            let why = e
                .to_string()
                .replace(&tmp.display().to_string(), &out.display().to_string());
            return Err(BuildError::Input {
                path: out.clone(),
                why: format!("clip-edge would refuse this bundle: {why}"),
            });
        }
        Ok(report)
    })?;
    Ok(report)
}

pub(super) fn activation_name(a: ActivationQuant) -> &'static str {
    match a {
        ActivationQuant::DynamicPerToken => "dynamic_per_token",
        ActivationQuant::StaticPerTensor => "static_per_tensor",
    }
}

pub(super) fn write_table(
    path: &Path,
    table: &[f32],
    rows: usize,
    dim: usize,
    dtype: &str,
) -> Result<(), BuildError> {
    let (bytes, dt): (Vec<u8>, safetensors::Dtype) = if dtype == "f16" {
        (
            table
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            safetensors::Dtype::F16,
        )
    } else {
        (
            table.iter().flat_map(|v| v.to_le_bytes()).collect(),
            safetensors::Dtype::F32,
        )
    };
    let view = safetensors::tensor::TensorView::new(dt, vec![rows, dim], &bytes).map_err(|e| {
        BuildError::Input {
            path: path.to_path_buf(),
            why: e.to_string(),
        }
    })?;
    let data = safetensors::serialize([(fmt::TABLE_TENSOR, view)], None).map_err(|e| {
        BuildError::Input {
            path: path.to_path_buf(),
            why: e.to_string(),
        }
    })?;
    std::fs::write(path, data).map_err(io(path))
}
