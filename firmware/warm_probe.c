/* The warm OCI guest's side of a warm start, with no Linux: flint boots it as the warm guest
   (two empty disks), it says it is ready on port 0x503 and waits until both disks have a size,
   which only a restore with a bundle gives them; then it prints the two capacities (in 512-byte
   sectors, read from each virtio-blk device's config space) and ends the VM with status 42.
   Before the restore it prints nothing: the restored run's output must be its own. */
#include "fwlib.h"

#define WARM_READY_PORT 0x503
#define EXIT_STATUS_PORT 0x501
/* flint's first two virtio-mmio windows: the root image and the spec disk. */
#define VDA 0xd0001000ULL
#define VDB 0xd0002000ULL
#define REG_CONFIG_GENERATION 0x0fc
#define REG_CONFIG 0x100 /* virtio_blk_config: capacity (u64) first */

static u64 capacity(u64 base)
{
    u32 gen, lo, hi;
    do {
        gen = mmio_read32(base + REG_CONFIG_GENERATION);
        lo = mmio_read32(base + REG_CONFIG);
        hi = mmio_read32(base + REG_CONFIG + 4);
    } while (mmio_read32(base + REG_CONFIG_GENERATION) != gen);
    return ((u64)hi << 32) | lo;
}

void fw_main(void *boot_params)
{
    (void)boot_params;
    if (map_mmio(VDA) != 0 || map_mmio(VDB) != 0)
        fail("cannot map the virtio windows");
    outb(WARM_READY_PORT, 1);
    u64 a = 0, b = 0;
    while ((a = capacity(VDA)) == 0 || (b = capacity(VDB)) == 0)
        cpu_relax();
    puts("flint-fw: restored vda=0x");
    puthex(a, 0);
    puts(" vdb=0x");
    puthex(b, 0);
    putc('\n');
    outb(EXIT_STATUS_PORT, 42);
    shutdown();
}
