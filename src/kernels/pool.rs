//! A persistent pool of compute threads, made once at load: the caller and
//! `threads - 1` workers split each large matrix product by rows (a static
//! partition, whole 2-row tiles each). A job is a borrowed closure: nothing
//! is allocated, boxed or locked per job. Workers spin briefly between jobs
//! (the ops between two products take microseconds), then park; waking a
//! parked worker is the only system call, about once per frame.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// Polls of the job counter before a waiting worker parks (tens of µs).
const SPIN_POLLS: u32 = 1 << 14;

/// Products smaller than this many multiply-adds run on the caller alone.
pub const MIN_PARALLEL_MACS: usize = 1 << 16;

type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    epoch: AtomicUsize,
    done: AtomicUsize,
    stop: AtomicBool,
    panicked: AtomicBool,
    /// The job of the current epoch; written by the caller only while no
    /// worker reads it (before the epoch is published, after all are done).
    job: UnsafeCell<Option<Job>>,
}

// SAFETY: `job` is written only by `Pool::run` while every worker waits for
// the next epoch, and read by workers only between the epoch's publication
// (Release/Acquire on `epoch`) and their `done` increment, which `run`
// awaits before returning or writing it again.
unsafe impl Sync for Shared {}
// SAFETY: as above; the pointer it holds is only dereferenced under that
// protocol.
unsafe impl Send for Shared {}

/// Not `Sync`: one owner runs jobs, never two threads at once.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    _one_owner: std::marker::PhantomData<std::cell::Cell<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} threads)", self.threads())
    }
}

impl Pool {
    /// The caller plus `threads - 1` workers.
    pub fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            job: UnsafeCell::new(None),
        });
        let workers = (1..threads.max(1))
            .map(|index| {
                let s = shared.clone();
                thread::Builder::new()
                    .name(format!("clip-edge-{index}"))
                    .spawn(move || worker(&s, index))
                    .expect("spawning a compute thread")
            })
            .collect();
        Pool {
            shared,
            workers,
            _one_owner: std::marker::PhantomData,
        }
    }

    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(0)` on the caller and `f(i)` on worker `i`, for every thread,
    /// and returns when all are done.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() {
            f(0);
            return;
        }
        let s = &*self.shared;
        s.panicked.store(false, Ordering::Relaxed);
        // SAFETY: the lifetime is erased for the workers, which only call
        // the job before incrementing `done`; this function does not return
        // (nor unwind: the caller's part runs under catch_unwind) before
        // `done` counts every worker, so `f` outlives every use.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
        // SAFETY: no worker reads `job` now: all finished the last epoch.
        unsafe { *s.job.get() = Some(job) };
        s.done.store(0, Ordering::Relaxed);
        s.epoch.fetch_add(1, Ordering::Release);
        for w in &self.workers {
            w.thread().unpark();
        }
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(0)));
        let mut polls = 0u32;
        while s.done.load(Ordering::Acquire) < self.workers.len() {
            // Yield now and then: with more threads than CPUs a worker may
            // need this one's CPU to finish.
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(SPIN_POLLS) {
                thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        // SAFETY: every worker is done with this epoch's job.
        unsafe { *s.job.get() = None };
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        assert!(
            !s.panicked.swap(false, Ordering::Relaxed),
            "a compute thread panicked"
        );
    }

    /// Splits `out`, `rows` rows of `row_len`, into one block of whole rows
    /// per thread (multiples of `align` rows) and runs `f(first_row, block)`
    /// on each block in parallel; on the caller alone when `work` is below
    /// `min_work` (as [`Pool::rows3`]).
    #[allow(clippy::too_many_arguments)]
    pub fn rows<T: Send>(
        &self,
        work: usize,
        min_work: usize,
        out: &mut [T],
        rows: usize,
        row_len: usize,
        align: usize,
        f: &(dyn Fn(usize, &mut [T]) + Sync),
    ) {
        self.rows3::<T, (), ()>(
            work,
            min_work,
            rows,
            align,
            Split::new(out, row_len),
            Split::empty(),
            Split::empty(),
            &|r0, block, _, _| f(r0, block),
        );
    }
}

/// One buffer split by rows: `row_len` elements a row (0: an empty buffer,
/// every block empty).
pub struct Split<'a, T> {
    pub buf: &'a mut [T],
    pub row_len: usize,
}

impl<'a, T> Split<'a, T> {
    pub fn new(buf: &'a mut [T], row_len: usize) -> Self {
        Split { buf, row_len }
    }

    /// No buffer: every thread's block is empty.
    pub fn empty() -> Self {
        Split {
            buf: &mut [],
            row_len: 0,
        }
    }
}

/// A [`Split`]'s base pointer and row length, for the threads.
struct Raw<T> {
    base: usize,
    row_len: usize,
    _t: std::marker::PhantomData<*mut T>,
}

impl<T> Clone for Raw<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Raw<T> {}

impl<T> Raw<T> {
    fn of(s: &mut Split<'_, T>, rows: usize) -> Raw<T> {
        assert!(
            rows.checked_mul(s.row_len)
                .is_some_and(|n| n <= s.buf.len()),
            "a split buffer is short"
        );
        Raw {
            base: s.buf.as_mut_ptr() as usize,
            row_len: s.row_len,
            _t: std::marker::PhantomData,
        }
    }

    /// # Safety
    /// Rows `[r0, r1)` lie within the buffer [`Raw::of`] checked, no other
    /// thread holds them, and the buffer stays borrowed while the block lives.
    unsafe fn block<'b>(self, r0: usize, r1: usize) -> &'b mut [T] {
        // SAFETY: the caller's contract, above.
        unsafe {
            std::slice::from_raw_parts_mut(
                (self.base as *mut T).add(r0 * self.row_len),
                (r1 - r0) * self.row_len,
            )
        }
    }
}

// SAFETY: a `Raw` is only turned back into a slice under `block`'s contract:
// disjoint rows per thread of a buffer borrowed mutably for the whole job.
unsafe impl<T: Send> Send for Raw<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Raw<T> {}

/// A [`Pool::rows3`] job: `f(first_row, a, b, c)`.
pub type RowsJob<'f, A, B, C> = dyn Fn(usize, &mut [A], &mut [B], &mut [C]) + Sync + 'f;

impl Pool {
    /// Rows each thread takes when [`Pool::rows3`] splits `rows` (multiples
    /// of `align`): thread `i` has `[i · per, (i + 1) · per)`, cut at `rows`.
    pub fn per_thread(&self, rows: usize, align: usize) -> usize {
        rows.div_ceil(self.threads()).div_ceil(align.max(1)) * align.max(1)
    }

    /// Splits three buffers by the same `rows` (each with its own row
    /// length) into one block of whole rows per thread, multiples of `align`
    /// rows, and runs `f(first_row, a, b, c)` on each thread's blocks. Runs
    /// on the caller alone when `work` (any measure of the job's size) is
    /// below `min_work`.
    #[allow(clippy::too_many_arguments)]
    pub fn rows3<A: Send, B: Send, C: Send>(
        &self,
        work: usize,
        min_work: usize,
        rows: usize,
        align: usize,
        mut a: Split<'_, A>,
        mut b: Split<'_, B>,
        mut c: Split<'_, C>,
        f: &RowsJob<'_, A, B, C>,
    ) {
        let (ra, rb, rc) = (
            Raw::of(&mut a, rows),
            Raw::of(&mut b, rows),
            Raw::of(&mut c, rows),
        );
        let t = self.threads();
        let per = self.per_thread(rows, align);
        if t == 1 || per >= rows || work < min_work {
            let (la, lb, lc) = (rows * a.row_len, rows * b.row_len, rows * c.row_len);
            f(0, &mut a.buf[..la], &mut b.buf[..lb], &mut c.buf[..lc]);
            return;
        }
        self.run(&|i| {
            let (r0, r1) = ((i * per).min(rows), ((i + 1) * per).min(rows));
            if r0 < r1 {
                // SAFETY: blocks [r0, r1) of distinct threads are disjoint,
                // within each buffer (checked by `Raw::of`), which stay
                // mutably borrowed (`a`, `b`, `c`) until `run` returns.
                let (x, y, z) = unsafe { (ra.block(r0, r1), rb.block(r0, r1), rc.block(r0, r1)) };
                f(r0, x, y, z);
            }
        });
    }
}

/// A matrix (`rows` rows of `row_len`) whose columns the threads split:
/// each gets every row's slice of its own columns ([`ColumnsMut`]).
pub struct Columns<'a, T> {
    pub buf: &'a mut [T],
    pub rows: usize,
    pub row_len: usize,
}

/// One thread's columns `[c0, c1)` of a [`Columns`] matrix.
pub struct ColumnsMut<'b, T> {
    base: *mut T,
    rows: usize,
    row_len: usize,
    c0: usize,
    c1: usize,
    _buf: std::marker::PhantomData<&'b mut [T]>,
}

impl<T> ColumnsMut<'_, T> {
    /// The first column this thread has.
    pub fn first(&self) -> usize {
        self.c0
    }

    /// Row `i`'s slice of this thread's columns.
    ///
    /// # Panics
    /// When `i` is not a row.
    pub fn row(&mut self, i: usize) -> &mut [T] {
        assert!(i < self.rows, "row {i} of {}", self.rows);
        // SAFETY: `Pool::split_columns` checked that the matrix lies within
        // its buffer and gave each thread disjoint columns; `&mut self`
        // keeps this row slice the only one alive from this handle.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.base.add(i * self.row_len + self.c0),
                self.c1 - self.c0,
            )
        }
    }
}

/// A [`Pool::split_columns`] job: `f(first_unit, a, b, c, columns)`.
pub type ColumnsJob<'f, A, B, C, T> =
    dyn Fn(usize, &mut [A], &mut [B], &mut [C], ColumnsMut<'_, T>) + Sync + 'f;

impl Pool {
    /// Splits `units` (each `unit_cols` columns of `m`, the last one cut at
    /// `m.row_len`) into one block per thread (multiples of `align` units)
    /// and runs `f(first_unit, a, b, c, columns)` on each: `a`, `b` and `c`
    /// split by the same units (as [`Pool::rows3`] splits rows), `columns`
    /// every row of `m` within the block's columns. On the caller alone
    /// when `work` is below `min_work`.
    #[allow(clippy::too_many_arguments)]
    pub fn split_columns<A: Send, B: Send, C: Send, T: Send>(
        &self,
        work: usize,
        min_work: usize,
        units: usize,
        unit_cols: usize,
        align: usize,
        a: Split<'_, A>,
        b: Split<'_, B>,
        c: Split<'_, C>,
        m: Columns<'_, T>,
        f: &ColumnsJob<'_, A, B, C, T>,
    ) {
        assert!(
            m.rows
                .checked_mul(m.row_len)
                .is_some_and(|n| n <= m.buf.len())
                && units.checked_mul(unit_cols).is_some_and(|c| c >= m.row_len),
            "a column split past its matrix"
        );
        let (base, rows, row_len) = (m.buf.as_mut_ptr() as usize, m.rows, m.row_len);
        let cols = |u0: usize, u1: usize| ColumnsMut {
            base: base as *mut T,
            rows,
            row_len,
            c0: (u0 * unit_cols).min(row_len),
            c1: (u1 * unit_cols).min(row_len),
            _buf: std::marker::PhantomData,
        };
        let (mut a, mut b, mut c) = (a, b, c);
        let (ra, rb, rc) = (
            Raw::of(&mut a, units),
            Raw::of(&mut b, units),
            Raw::of(&mut c, units),
        );
        let t = self.threads();
        let per = self.per_thread(units, align);
        if t == 1 || per >= units || work < min_work {
            let (la, lb, lc) = (units * a.row_len, units * b.row_len, units * c.row_len);
            f(
                0,
                &mut a.buf[..la],
                &mut b.buf[..lb],
                &mut c.buf[..lc],
                cols(0, units),
            );
            return;
        }
        self.run(&|i| {
            let (u0, u1) = ((i * per).min(units), ((i + 1) * per).min(units));
            if u0 < u1 {
                // SAFETY: blocks [u0, u1) of distinct threads are disjoint,
                // within each buffer (checked by `Raw::of`), which stay
                // mutably borrowed (`a`, `b`, `c`) until `run` returns; the
                // columns of distinct blocks are disjoint too.
                let (x, y, z) = unsafe { (ra.block(u0, u1), rb.block(u0, u1), rc.block(u0, u1)) };
                f(u0, x, y, z, cols(u0, u1));
            }
        });
    }
}

fn worker(s: &Shared, index: usize) {
    let mut seen = 0;
    loop {
        let mut polls = 0;
        loop {
            if s.stop.load(Ordering::Acquire) {
                return;
            }
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            if polls < SPIN_POLLS {
                polls += 1;
                std::hint::spin_loop();
            } else {
                thread::park();
            }
        }
        // SAFETY: the epoch was published after the job was written, and
        // the caller keeps it alive until this worker counts itself done.
        if let Some(job) = unsafe { *s.job.get() } {
            // SAFETY: as above: the closure behind `job` is alive.
            let f = unsafe { &*job };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(index))).is_err() {
                s.panicked.store(true, Ordering::Relaxed);
            }
        }
        s.done.fetch_add(1, Ordering::Release);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for w in &self.workers {
            w.thread().unpark();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_cover_every_row_once_on_every_pool_size() {
        for threads in 1..=4 {
            let pool = Pool::new(threads);
            for rows in [0usize, 1, 2, 3, 7, 50, 101] {
                let mut out = vec![0u32; rows * 3];
                for _ in 0..3 {
                    pool.rows(0, 0, &mut out, rows, 3, 2, &|r0, block| {
                        for (i, v) in block.iter_mut().enumerate() {
                            *v += (r0 * 3 + i) as u32 + 1;
                        }
                    });
                }
                let want: Vec<u32> = (0..rows * 3).map(|i| 3 * (i as u32 + 1)).collect();
                assert_eq!(out, want, "{threads} threads, {rows} rows");
            }
        }
    }

    #[test]
    fn split_columns_gives_each_thread_its_columns_of_every_row_once() {
        for threads in 1..=4 {
            let pool = Pool::new(threads);
            for (rows, row_len, align) in [
                (3usize, 100usize, 1usize),
                (2, 33, 2),
                (5, 16, 1),
                (1, 1, 3),
                (4, 250, 7),
            ] {
                let units = row_len.div_ceil(16);
                let mut m = vec![0u32; rows * row_len];
                let mut a = vec![0u8; units * 2];
                pool.split_columns(
                    0,
                    0,
                    units,
                    16,
                    align,
                    Split::new(&mut a, 2),
                    Split::<()>::empty(),
                    Split::<()>::empty(),
                    Columns {
                        buf: &mut m,
                        rows,
                        row_len,
                    },
                    &|u0, a, _, _, mut cols| {
                        assert_eq!(cols.first(), u0 * 16);
                        a.iter_mut().for_each(|v| *v += 1);
                        for r in 0..rows {
                            let c0 = cols.first();
                            for (j, v) in cols.row(r).iter_mut().enumerate() {
                                *v += (r * row_len + c0 + j) as u32 + 1;
                            }
                        }
                    },
                );
                let want: Vec<u32> = (1..=(rows * row_len) as u32).collect();
                assert_eq!(m, want, "{threads} threads, {rows}x{row_len}");
                assert!(a.iter().all(|v| *v == 1), "{threads} threads: {a:?}");
            }
        }
    }

    #[test]
    fn rows3_gives_each_thread_the_same_rows_of_every_buffer() {
        for threads in 1..=4 {
            let pool = Pool::new(threads);
            for rows in [0usize, 1, 2, 3, 7, 50, 101] {
                let mut a = vec![0u8; rows * 2];
                let mut b = vec![0i32; rows * 5];
                let mut c: Vec<f32> = Vec::new();
                for min_work in [0, usize::MAX] {
                    pool.rows3(
                        rows,
                        min_work,
                        rows,
                        2,
                        Split::new(&mut a, 2),
                        Split::new(&mut b, 5),
                        Split::new(&mut c, 0),
                        &|r0, a, b, c| {
                            assert_eq!(a.len() / 2, b.len() / 5);
                            assert!(c.is_empty());
                            for (i, v) in a.iter_mut().enumerate() {
                                *v += ((r0 * 2 + i) % 100) as u8 + 1;
                            }
                            for (i, v) in b.iter_mut().enumerate() {
                                *v += (r0 * 5 + i) as i32 + 1;
                            }
                        },
                    );
                }
                let wa: Vec<u8> = (0..rows * 2).map(|i| 2 * ((i % 100) as u8 + 1)).collect();
                let wb: Vec<i32> = (0..rows * 5).map(|i| 2 * (i as i32 + 1)).collect();
                assert_eq!((a, b), (wa, wb), "{threads} threads, {rows} rows");
            }
        }
    }
}
