//! Parameter sets in device memory: one flat buffer laid out by a `ParamTable` (the offsets of
//! `HostParams`), and a view of it per tensor. Two element types: bf16 (the weights the forward
//! and the rollout read) and f32 (gradients, the AdamW master weights and moments), so a whole
//! set is one buffer for the optimizer's single pass (and for one all-reduce).
use super::cast::{cast_bf16_to_f32, cast_f32_to_bf16};
use crate::device::{Buffer, DType, Device};
use crate::params::{HostParams, ParamId, ParamTable};
use anyhow::{bail, ensure, Context, Result};
use std::sync::Arc;

/// A parameter set on a device: a flat buffer of one element type and its per-tensor views
/// (every buffer tagged with the type, so a launcher refuses one of the wrong kind by name).
pub struct DeviceParams {
    table: Arc<ParamTable>,
    dtype: DType,
    flat: Buffer,
    pub(super) views: Vec<Buffer>,
}

impl DeviceParams {
    /// `table`'s tensors on `dev` as `dtype`, uninitialised.
    fn alloc(dev: &Device, table: &Arc<ParamTable>, dtype: DType) -> Result<Self> {
        let size = dtype.size();
        let flat = dev
            .alloc(table.total() * size)
            .with_context(|| format!("allocating {} {dtype} parameters on {}", table.total(), dev.name()))?
            .typed(dtype);
        let views = table.entries().iter().map(|e| flat.view(e.offset * size, e.len * size)).collect::<Result<Vec<_>>>()?;
        Ok(DeviceParams { table: table.clone(), dtype, flat, views })
    }

    /// A set of `table`'s shape on `dev`, all zero: gradients and AdamW moments (f32).
    pub fn zeros(dev: &Device, table: &Arc<ParamTable>, dtype: DType) -> Result<Self> {
        let p = Self::alloc(dev, table, dtype)?;
        dev.zero(&p.flat)?;
        Ok(p)
    }

    /// `host` in bf16 on `dev` (round to nearest even), one tensor at a time through an f32
    /// staging buffer (so the device never holds an f32 copy of the whole model).
    pub fn upload(dev: &Device, host: &HostParams) -> Result<Self> {
        let p = Self::alloc(dev, host.table(), DType::Bf16)?;
        p.write(dev, host)?;
        Ok(p)
    }

    /// `host` in f32 on `dev`, unrounded: the master weights AdamW updates.
    pub fn upload_f32(dev: &Device, host: &HostParams) -> Result<Self> {
        let p = Self::alloc(dev, host.table(), DType::F32)?;
        p.write(dev, host)?;
        Ok(p)
    }

    /// Overwrites the values with `host`'s (same table), in place: bf16 sets round to nearest
    /// even; f32 sets take the values as they are.
    pub fn write(&self, dev: &Device, host: &HostParams) -> Result<()> {
        if !Arc::ptr_eq(&self.table, host.table()) && *self.table != **host.table() {
            bail!("the parameters to upload describe a different model than the copy on {}", dev.name());
        }
        match self.dtype {
            DType::F32 => dev.write(&self.flat, host.flat()).with_context(|| format!("uploading the f32 parameters to {}", dev.name())),
            DType::Bf16 => {
                for ((e, values), view) in host.iter().zip(&self.views) {
                    let staging = dev.upload(values).with_context(|| format!("uploading `{}` to {}", e.name, dev.name()))?;
                    cast_f32_to_bf16(dev, &staging, view, e.len).with_context(|| format!("casting `{}` to bf16", e.name))?;
                }
                Ok(())
            }
        }
    }

    /// The values on the host, as f32 (bf16 widened exactly).
    pub fn download(&self, dev: &Device) -> Result<HostParams> {
        let n = self.table.total();
        let flat: Vec<f32> = match self.dtype {
            DType::F32 => dev.download(&self.flat)?,
            DType::Bf16 => {
                let wide = dev.alloc(n * 4)?;
                cast_bf16_to_f32(dev, &self.flat, &wide, n)?;
                dev.download(&wide)?
            }
        };
        HostParams::from_flat(&self.table, flat)
    }

    /// This bf16 set ← bf16(`master`), round to nearest even, in one pass on the device: the
    /// weight sync from the optimizer's f32 master to the copy the rollout reads (no host copy).
    /// (`cuda::adamw::adamw_update` can also write the copy inside the update itself.)
    pub fn cast_from(&self, dev: &Device, master: &DeviceParams) -> Result<()> {
        self.check_same(master, "the master weights")?;
        ensure!(self.dtype == DType::Bf16 && master.dtype == DType::F32, "cast_from: a {} set from a {} one (expected bf16 from f32)", self.dtype, master.dtype);
        cast_f32_to_bf16(dev, &master.flat, &self.flat, self.table.total())
    }

    /// Fails unless `other` has the same table (same tensors, shapes and order).
    pub fn check_same(&self, other: &DeviceParams, what: &str) -> Result<()> {
        if !Arc::ptr_eq(&self.table, &other.table) && *self.table != *other.table {
            bail!("{what}: the two parameter sets describe different models");
        }
        Ok(())
    }

    pub fn table(&self) -> &Arc<ParamTable> {
        &self.table
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Elements in the set (every tensor).
    pub fn len(&self) -> usize {
        self.table.total()
    }

    pub fn is_empty(&self) -> bool {
        self.table.total() == 0
    }

    /// The consecutive tensors `first..=last` as one view of the flat buffer (no copy).
    pub fn span(&self, first: ParamId, last: ParamId) -> Result<Buffer> {
        let r = self.table.span(first, last)?;
        let size = self.dtype.size();
        self.flat.view(r.start * size, r.len() * size)
    }

    /// The flat buffer (every tensor, table order).
    pub fn flat(&self) -> &Buffer {
        &self.flat
    }
}

/// A view of consecutive parameters borrowed from their set (`Ops::param_span`): the buffer
/// view it holds is only valid while the set lives, which the lifetime states.
pub struct SpanView<'a>(Buffer, std::marker::PhantomData<&'a DeviceParams>);

/// As `SpanView`, written through (a gradient span), the set borrowed mutably.
pub struct SpanViewMut<'a>(Buffer, std::marker::PhantomData<&'a mut DeviceParams>);

impl<'a> SpanView<'a> {
    pub fn new(p: &'a DeviceParams, first: ParamId, last: ParamId) -> Result<Self> {
        Ok(SpanView(p.span(first, last)?, std::marker::PhantomData))
    }
}

impl<'a> SpanViewMut<'a> {
    pub fn new(p: &'a mut DeviceParams, first: ParamId, last: ParamId) -> Result<Self> {
        Ok(SpanViewMut(p.span(first, last)?, std::marker::PhantomData))
    }
}

impl std::ops::Deref for SpanView<'_> {
    type Target = Buffer;
    fn deref(&self) -> &Buffer {
        &self.0
    }
}

impl std::ops::Deref for SpanViewMut<'_> {
    type Target = Buffer;
    fn deref(&self) -> &Buffer {
        &self.0
    }
}

impl std::ops::DerefMut for SpanViewMut<'_> {
    fn deref_mut(&mut self) -> &mut Buffer {
        &mut self.0
    }
}
