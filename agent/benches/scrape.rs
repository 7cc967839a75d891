//! One full scrape of 1,000 containers: walking the cgroup tree, reading
//! every cgroup file family of each container, and encoding the Prometheus
//! text, as `/metrics` does (without eBPF maps, which need root). The tree is
//! a fixture laid out as a pure cgroup v2 node: 100 burstable pods of 10
//! containers. Also prints the peak heap growth of one scrape, measured with
//! a counting allocator.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    fs,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use agent::{
    cgroup_tree::CgroupTree,
    cgroupfs::{Hierarchies, StatsReader},
    collector::Collector,
    exposition::{self, Exporter},
    probes::Probes,
};
use criterion::{Criterion, criterion_group, criterion_main};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers every call to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is the system allocator's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const PODS: usize = 100;
const CONTAINERS_PER_POD: usize = 10;

const MEMORY_STAT: &str = "anon 104857600\nfile 52428800\nkernel 4194304\nkernel_stack 98304\npagetables 409600\nsec_pagetables 0\npercpu 1200\nsock 0\nvmalloc 0\nshmem 0\nzswap 0\nzswapped 0\nfile_mapped 1000\nfile_dirty 0\nfile_writeback 0\nswapcached 0\nanon_thp 0\nfile_thp 0\nshmem_thp 0\ninactive_anon 0\nactive_anon 104857600\ninactive_file 20971520\nactive_file 31457280\nunevictable 0\nslab_reclaimable 2000000\nslab_unreclaimable 1000000\nslab 3000000\nworkingset_refault_anon 3\nworkingset_refault_file 4\nworkingset_activate_anon 0\nworkingset_activate_file 0\nworkingset_restore_anon 0\nworkingset_restore_file 0\nworkingset_nodereclaim 0\npgscan 0\npgsteal 0\npgscan_kswapd 0\npgscan_direct 0\npgsteal_kswapd 0\npgsteal_direct 0\npgfault 5000\npgmajfault 7\npgrefill 0\npgactivate 0\npgdeactivate 0\npglazyfree 0\npglazyfreed 0\nthp_fault_alloc 0\nthp_collapse_alloc 0\n";
const PRESSURE: &str = "some avg10=0.00 avg60=0.00 avg300=0.00 total=12345\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=678\n";

fn write_cgroup(dir: &Path) {
    let files: [(&str, &str); 14] = [
        ("cgroup.procs", ""),
        (
            "cpu.stat",
            "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 20\nnr_throttled 18\nthrottled_usec 1700000\nnr_bursts 0\nburst_usec 0\n",
        ),
        ("cpu.max", "50000 100000\n"),
        ("cpu.weight", "100\n"),
        ("memory.current", "167772160\n"),
        ("memory.max", "268435456\n"),
        ("memory.high", "max\n"),
        ("memory.stat", MEMORY_STAT),
        (
            "memory.events",
            "low 0\nhigh 0\nmax 3\noom 0\noom_kill 0\noom_group_kill 0\n",
        ),
        ("memory.swap.current", "0\n"),
        (
            "io.stat",
            "254:0 rbytes=1048576 wbytes=2097152 rios=10 wios=20 dbytes=0 dios=0\n",
        ),
        ("cpu.pressure", PRESSURE),
        ("memory.pressure", PRESSURE),
        ("io.pressure", PRESSURE),
    ];
    if let Err(e) = fs::create_dir_all(dir) {
        panic!("mkdir {}: {e}", dir.display());
    }
    for (name, text) in files {
        if let Err(e) = fs::write(dir.join(name), text) {
            panic!("writing {name}: {e}");
        }
    }
}

fn node(root: &Path) {
    write_cgroup(root);
    let qos = root.join("kubepods.slice/kubepods-burstable.slice");
    for pod in 0..PODS {
        let pod_dir = qos.join(format!(
            "kubepods-burstable-pod{pod:08x}_1d2e_4f5a_8b9c_0d1e2f3a4b5c.slice"
        ));
        write_cgroup(&pod_dir);
        for container in 0..CONTAINERS_PER_POD {
            write_cgroup(&pod_dir.join(format!(
                "cri-containerd-{:064x}.scope",
                pod * CONTAINERS_PER_POD + container
            )));
        }
    }
}

fn scrape(c: &mut Criterion) {
    let root = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("tempdir: {e}"),
    };
    node(root.path());
    let tree = CgroupTree::new(
        root.path().to_owned(),
        Duration::from_secs(1),
        Duration::from_secs(3600),
    );
    let reader = StatsReader::new(Hierarchies::discover(root.path()));
    let collector = match Collector::new(Probes::none(), tree, reader) {
        Ok(collector) => collector,
        Err(e) => panic!("scanning the fixture tree: {e}"),
    };
    let exporter = Arc::new(Exporter::new(collector));
    let registry = exposition::registry(exporter.clone());

    // Warm up the reused buffers, then measure one scrape's heap growth.
    let text = exposition::render(&registry, false).unwrap_or_default();
    let containers = text.matches("stallwatch_cpu_usage_seconds_total{").count();
    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let again = exposition::render(&registry, false).unwrap_or_default();
    let growth = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    println!(
        "scrape of {containers} cgroups ({} containers): {} bytes of exposition, peak heap growth {:.1} MiB",
        PODS * CONTAINERS_PER_POD,
        again.len(),
        growth as f64 / (1 << 20) as f64
    );
    drop((text, again));

    c.bench_function("scrape_1000_containers", |b| {
        b.iter(|| exposition::render(&registry, false))
    });
    c.bench_function("collect_only_1000_containers", |b| {
        b.iter(|| exporter.with_collector(|collector| collector.collect().tracked_cgroups))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(8));
    targets = scrape
}
criterion_main!(benches);
