//! CLIP's `ModifiedResNet`: a three-conv ResNet-D stem, anti-aliased
//! bottlenecks (average pooling before strided convolutions), and attention
//! pooling with the mean token as the query. BatchNorm is folded into the
//! convolutions.

use tract_core::internal::*;

use super::{Builder, Result, BN_EPS};
use crate::config::{ClipConfig, Vision};

/// `conv` (no bias) followed by eval-mode `bn`, folded into one convolution.
fn conv_bn(
    b: &mut Builder<'_>,
    x: OutletId,
    conv: &str,
    bn: &str,
    [out, inp, k]: [usize; 3],
    stride: usize,
) -> Result<OutletId> {
    let mut wd = b.param_vec(&format!("{conv}.weight"), &[out, inp, k, k])?;
    let gamma =
        b.sd.get_shaped(&format!("{bn}.weight"), &[out])?
            .data
            .clone();
    let beta = b.sd.get_shaped(&format!("{bn}.bias"), &[out])?.data.clone();
    let mean =
        b.sd.get_shaped(&format!("{bn}.running_mean"), &[out])?
            .data
            .clone();
    let var =
        b.sd.get_shaped(&format!("{bn}.running_var"), &[out])?
            .data
            .clone();
    let per = inp * k * k;
    let mut bias = vec![0f32; out];
    for o in 0..out {
        // Folded in f64, rounded once.
        let s = gamma[o] as f64 / (var[o] as f64 + BN_EPS as f64).sqrt();
        for v in &mut wd[o * per..(o + 1) * per] {
            *v = (*v as f64 * s) as f32;
        }
        bias[o] = (beta[o] as f64 - mean[o] as f64 * s) as f32;
    }
    b.conv(
        conv,
        x,
        wd,
        [out, inp, k, k],
        Some(tensor1(&bias)),
        stride,
        k / 2,
    )
}

fn bottleneck(
    b: &mut Builder<'_>,
    p: &str,
    x: OutletId,
    inplanes: usize,
    planes: usize,
    stride: usize,
) -> Result<OutletId> {
    let h = conv_bn(
        b,
        x,
        &format!("{p}.conv1"),
        &format!("{p}.bn1"),
        [planes, inplanes, 1],
        1,
    )?;
    let h = b.relu(&format!("{p}.relu1"), h)?;
    let h = conv_bn(
        b,
        h,
        &format!("{p}.conv2"),
        &format!("{p}.bn2"),
        [planes, planes, 3],
        1,
    )?;
    let mut h = b.relu(&format!("{p}.relu2"), h)?;
    if stride > 1 {
        h = b.avg_pool(&format!("{p}.avgpool"), h, stride)?;
    }
    let h = conv_bn(
        b,
        h,
        &format!("{p}.conv3"),
        &format!("{p}.bn3"),
        [planes * 4, planes, 1],
        1,
    )?;
    let identity = if stride > 1 || inplanes != planes * 4 {
        let mut d = x;
        if stride > 1 {
            d = b.avg_pool(&format!("{p}.downsample.-1"), d, stride)?;
        }
        conv_bn(
            b,
            d,
            &format!("{p}.downsample.0"),
            &format!("{p}.downsample.1"),
            [planes * 4, inplanes, 1],
            1,
        )?
    } else {
        x
    };
    let y = b.add(&format!("{p}.residual"), h, identity)?;
    b.relu(&format!("{p}.relu3"), y)
}

pub fn build(b: &mut Builder<'_>, cfg: &ClipConfig, batch: usize) -> Result<OutletId> {
    let Vision::ResNet {
        width,
        layers,
        heads,
        output_grid,
    } = cfg.vision
    else {
        unreachable!("resnet::build on a ViT config")
    };
    let r = cfg.image_resolution;
    let x = b.source("image", f32::fact([batch, 3, r, r]))?;
    // Stem.
    let x = conv_bn(b, x, "visual.conv1", "visual.bn1", [width / 2, 3, 3], 2)?;
    let x = b.relu("visual.relu1", x)?;
    let x = conv_bn(
        b,
        x,
        "visual.conv2",
        "visual.bn2",
        [width / 2, width / 2, 3],
        1,
    )?;
    let x = b.relu("visual.relu2", x)?;
    let x = conv_bn(b, x, "visual.conv3", "visual.bn3", [width, width / 2, 3], 1)?;
    let x = b.relu("visual.relu3", x)?;
    let mut x = b.avg_pool("visual.avgpool", x, 2)?;
    let mut inplanes = width;
    for (li, &n) in layers.iter().enumerate() {
        let planes = width << li;
        for bi in 0..n {
            let stride = if li > 0 && bi == 0 { 2 } else { 1 };
            x = bottleneck(
                b,
                &format!("visual.layer{}.{bi}", li + 1),
                x,
                inplanes,
                planes,
                stride,
            )?;
            inplanes = planes * 4;
        }
    }
    // Attention pooling.
    let c = width * 32;
    let hw = output_grid * output_grid;
    let x = b.reshape(
        "visual.attnpool.flatten",
        x,
        2,
        &[output_grid, output_grid],
        &[hw],
    )?;
    let x = b.move_axis("visual.attnpool.tokens", x, 1, 2)?; // [B, HW, C]
    let mean = b.mean("visual.attnpool.mean", x, 1)?; // [B, 1, C]
    let x = b.concat("visual.attnpool.with_mean", &[mean, x], 1)?;
    let pos = b.param("visual.attnpool.positional_embedding", &[hw + 1, c])?;
    let x = b.add("visual.attnpool.pos", x, pos)?;
    let q_in = b.slice("visual.attnpool.query", x, 1, 0, 1)?;
    let p = "visual.attnpool";
    let q = b.linear(
        &format!("{p}.q_proj"),
        q_in,
        &format!("{p}.q_proj.weight"),
        Some(&format!("{p}.q_proj.bias")),
        c,
    )?;
    let k = b.linear(
        &format!("{p}.k_proj"),
        x,
        &format!("{p}.k_proj.weight"),
        Some(&format!("{p}.k_proj.bias")),
        c,
    )?;
    let v = b.linear(
        &format!("{p}.v_proj"),
        x,
        &format!("{p}.v_proj.weight"),
        Some(&format!("{p}.v_proj.bias")),
        c,
    )?;
    let a = b.attention(&format!("{p}.attn"), q, k, v, heads, None)?; // [B, 1, C]
    let o = b.linear(
        &format!("{p}.c_proj"),
        a,
        &format!("{p}.c_proj.weight"),
        Some(&format!("{p}.c_proj.bias")),
        cfg.embed_dim,
    )?;
    let o = b.rm_axis("visual.attnpool.squeeze", o, 1)?;
    Ok(o)
}
