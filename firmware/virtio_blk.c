/* A driver for one virtio-mmio (version 2) block device, after the virtio 1.1 spec: §4.2.2 (MMIO
   registers), §4.2.3 (initialization), §2.6 (split virtqueues), §5.2 (block device). It finds the
   device from the command line's virtio_mmio.device=SIZE@ADDR:IRQ, sets up queue 0 without
   interrupts (it polls the used ring), then reads sector 0, writes sector 1 and reads it back,
   flushes, asks for the device ID, reads past the end, sends an unknown request type and reads
   twice round the rings, printing each request's status. With the word blk.ro on the command
   line the disk is expected to be read-only (the write then fails with IOERR). */
#include "fwlib.h"

#define DEFAULT_BASE 0xd0001000ULL

/* MMIO registers (§4.2.2) */
#define REG_MAGIC 0x000
#define REG_VERSION 0x004
#define REG_DEVICE_ID 0x008
#define REG_VENDOR_ID 0x00c
#define REG_DEVICE_FEATURES 0x010
#define REG_DEVICE_FEATURES_SEL 0x014
#define REG_DRIVER_FEATURES 0x020
#define REG_DRIVER_FEATURES_SEL 0x024
#define REG_QUEUE_SEL 0x030
#define REG_QUEUE_NUM_MAX 0x034
#define REG_QUEUE_NUM 0x038
#define REG_QUEUE_READY 0x044
#define REG_QUEUE_NOTIFY 0x050
#define REG_INTERRUPT_STATUS 0x060
#define REG_INTERRUPT_ACK 0x064
#define REG_STATUS 0x070
#define REG_QUEUE_DESC_LOW 0x080
#define REG_QUEUE_DESC_HIGH 0x084
#define REG_QUEUE_DRIVER_LOW 0x090
#define REG_QUEUE_DRIVER_HIGH 0x094
#define REG_QUEUE_DEVICE_LOW 0x0a0
#define REG_QUEUE_DEVICE_HIGH 0x0a4
#define REG_CONFIG_GENERATION 0x0fc
#define REG_CONFIG 0x100 /* virtio_blk_config: capacity (u64, 512-byte sectors) first */

#define MAGIC 0x74726976 /* "virt" */
#define DEVICE_ID_BLOCK 2

/* Device status bits (§2.1) */
#define S_ACKNOWLEDGE 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8
#define S_NEEDS_RESET 64
#define S_FAILED 128

/* Feature bits */
#define F_BLK_RO 5
#define F_BLK_FLUSH 9
#define F_VERSION_1 32

/* Split virtqueue (§2.6) */
#define QSIZE_MAX 8
#define DESC_F_NEXT 1
#define DESC_F_WRITE 2
#define AVAIL_F_NO_INTERRUPT 1

struct virtq_desc {
    u64 addr;
    u32 len;
    u16 flags;
    u16 next;
};

struct virtq_avail {
    u16 flags;
    u16 idx;
    u16 ring[QSIZE_MAX];
    u16 used_event;
};

struct virtq_used_elem {
    u32 id;
    u32 len; /* bytes the device wrote into the chain's writable buffers */
};

struct virtq_used {
    u16 flags;
    u16 idx;
    struct virtq_used_elem ring[QSIZE_MAX];
    u16 avail_event;
};

/* Block requests (§5.2.6) */
#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8
#define T_UNKNOWN 0x4242 /* no such type: the device must answer UNSUPP */
#define SECTOR 512
#define ID_BYTES 20

struct blk_req_header {
    u32 type;
    u32 reserved;
    u64 sector;
};

static struct virtq_desc desc[QSIZE_MAX] __attribute__((aligned(16)));
static struct virtq_avail avail __attribute__((aligned(2)));
static struct virtq_used used __attribute__((aligned(4)));
static struct blk_req_header header __attribute__((aligned(16)));
static u8 data[SECTOR] __attribute__((aligned(512)));
static u8 status_byte;

static u64 base;
static u16 qsize;
static u16 last_used;
static u32 interrupts_seen;

static u32 rd(u32 reg) { return mmio_read32(base + reg); }
static void wr(u32 reg, u32 v) { mmio_write32(base + reg, v); }

/* Ends a request's line: " status=S len=L". */
static void put_status(u32 status, u32 len)
{
    puts(" status=");
    putdec(status);
    puts(" len=");
    putdec(len);
    putc('\n');
}

static void no_answer(void)
{
    puts("flint-fw: error: the device never answered: used.idx=");
    putdec(*(volatile u16 *)&used.idx);
    puts(" expected ");
    putdec((u16)(last_used + 1));
    puts(", status register=0x");
    puthex(rd(REG_STATUS), 0);
    puts(", interrupt status=0x");
    puthex(rd(REG_INTERRUPT_STATUS), 0);
    putc('\n');
    shutdown();
}

/* Waits for the device to put the chain it was just given in the used ring: a few seconds of
   TSC on hardware, with an iteration bound in case the TSC does not move. */
static void wait_used(void)
{
    u64 start = rdtsc();
    for (u64 i = 0;; i++) {
        if (*(volatile u16 *)&used.idx != last_used)
            return;
        if ((i & 0xff) == 0 && (rdtsc() - start > 20000000000ULL || i > 200000000ULL))
            no_answer();
        cpu_relax();
    }
}

/* One request as a chain: the header (device-readable), then data_len bytes of data (writable
   by the device when data_writable) if any, then the status byte (writable). Returns the
   status the device wrote (0xff if it wrote none) and the used length in *used_len. */
static u32 request(u32 type, u64 sector, u32 data_len, int data_writable, u32 *used_len)
{
    header.type = type;
    header.reserved = 0;
    header.sector = sector;
    status_byte = 0xff;

    int n = 0;
    desc[n] = (struct virtq_desc){(u64)&header, sizeof header, DESC_F_NEXT, (u16)(n + 1)};
    n++;
    if (data_len) {
        desc[n] = (struct virtq_desc){(u64)data, data_len,
                                      (u16)(DESC_F_NEXT | (data_writable ? DESC_F_WRITE : 0)),
                                      (u16)(n + 1)};
        n++;
    }
    desc[n] = (struct virtq_desc){(u64)&status_byte, 1, DESC_F_WRITE, 0};

    avail.ring[avail.idx % qsize] = 0; /* the chain's head */
    barrier(); /* descriptors and ring entry before the index that publishes them */
    avail.idx++;
    barrier();
    wr(REG_QUEUE_NOTIFY, 0);

    wait_used();
    barrier();
    struct virtq_used_elem e = used.ring[last_used % qsize];
    last_used++;
    if (e.id != 0) {
        puts("flint-fw: error: used ring names descriptor ");
        putdec(e.id);
        puts(", not the chain's head 0\n");
        shutdown();
    }
    /* No interrupt handler: acknowledge what the device raised so the line drops. */
    u32 isr = rd(REG_INTERRUPT_STATUS);
    if (isr) {
        interrupts_seen |= isr;
        wr(REG_INTERRUPT_ACK, isr);
    }
    *used_len = e.len;
    return *(volatile u8 *)&status_byte;
}

/* The base address from virtio_mmio.device=SIZE@ADDR:IRQ, or the default. */
static u64 device_base(const char *cl)
{
    const char *p = find_after(cl, "virtio_mmio.device=");
    u64 addr;
    if (!p)
        return DEFAULT_BASE;
    while (*p && *p != '@' && *p != ' ')
        p++;
    if (*p != '@' || parse_hex(p + 1, &addr) == 0)
        return DEFAULT_BASE;
    return addr;
}

static void set_status(u32 bits)
{
    wr(REG_STATUS, rd(REG_STATUS) | bits);
}

static u64 read_capacity(void)
{
    u32 gen, lo, hi;
    do {
        gen = rd(REG_CONFIG_GENERATION);
        lo = rd(REG_CONFIG);
        hi = rd(REG_CONFIG + 4);
    } while (rd(REG_CONFIG_GENERATION) != gen);
    return ((u64)hi << 32) | lo;
}

static void init_device(void)
{
    u32 magic = rd(REG_MAGIC);
    if (magic != MAGIC) {
        puts("flint-fw: no virtio-mmio device at 0x");
        puthex(base, 0);
        puts(" (magic=0x");
        puthex(magic, 0);
        puts(")\n");
        shutdown();
    }
    u32 version = rd(REG_VERSION), id = rd(REG_DEVICE_ID);
    puts("flint-fw: magic=0x");
    puthex(magic, 0);
    puts(" version=");
    putdec(version);
    puts(" device=");
    putdec(id);
    puts(" vendor=0x");
    puthex(rd(REG_VENDOR_ID), 0);
    putc('\n');
    if (version != 2)
        fail("not a version 2 (modern) virtio-mmio device");
    if (id != DEVICE_ID_BLOCK)
        fail("not a block device");

    wr(REG_STATUS, 0); /* reset, and wait for it to finish */
    for (int i = 0; rd(REG_STATUS) != 0; i++)
        if (i > 1000000)
            fail("the device status did not go back to 0 after a reset");
    set_status(S_ACKNOWLEDGE);
    set_status(S_DRIVER);

    wr(REG_DEVICE_FEATURES_SEL, 0);
    u64 offered = rd(REG_DEVICE_FEATURES);
    wr(REG_DEVICE_FEATURES_SEL, 1);
    offered |= (u64)rd(REG_DEVICE_FEATURES) << 32;
    u64 accepted = (1ULL << F_VERSION_1) | (offered & (1ULL << F_BLK_FLUSH));
    puts("flint-fw: features offered=0x");
    puthex(offered, 0);
    puts(" accepted=0x");
    puthex(accepted, 0);
    puts(offered & (1ULL << F_BLK_RO) ? " (device says read-only)\n" : "\n");
    if (!(offered & (1ULL << F_VERSION_1)))
        fail("the device does not offer VIRTIO_F_VERSION_1");
    wr(REG_DRIVER_FEATURES_SEL, 0);
    wr(REG_DRIVER_FEATURES, (u32)accepted);
    wr(REG_DRIVER_FEATURES_SEL, 1);
    wr(REG_DRIVER_FEATURES, (u32)(accepted >> 32));
    set_status(S_FEATURES_OK);
    if (!(rd(REG_STATUS) & S_FEATURES_OK))
        fail("the device did not keep FEATURES_OK");

    wr(REG_QUEUE_SEL, 0);
    if (rd(REG_QUEUE_READY) != 0)
        fail("queue 0 is already ready after a reset");
    u32 max = rd(REG_QUEUE_NUM_MAX);
    if (max == 0)
        fail("queue 0 is not available (QueueNumMax=0)");
    qsize = QSIZE_MAX; /* split queue sizes are powers of 2 */
    while (qsize > max)
        qsize /= 2;
    puts("flint-fw: queue 0 size=");
    putdec(qsize);
    puts(" max=");
    putdec(max);
    putc('\n');
    avail.flags = AVAIL_F_NO_INTERRUPT; /* we poll */
    wr(REG_QUEUE_NUM, qsize);
    wr(REG_QUEUE_DESC_LOW, (u32)(u64)desc);
    wr(REG_QUEUE_DESC_HIGH, (u32)((u64)desc >> 32));
    wr(REG_QUEUE_DRIVER_LOW, (u32)(u64)&avail);
    wr(REG_QUEUE_DRIVER_HIGH, (u32)((u64)&avail >> 32));
    wr(REG_QUEUE_DEVICE_LOW, (u32)(u64)&used);
    wr(REG_QUEUE_DEVICE_HIGH, (u32)((u64)&used >> 32));
    wr(REG_QUEUE_READY, 1);
    if (rd(REG_QUEUE_READY) != 1)
        fail("queue 0 did not become ready");

    set_status(S_DRIVER_OK);
    u32 st = rd(REG_STATUS);
    puts("flint-fw: status=0x");
    puthex(st, 0);
    putc('\n');
    if (st & (S_NEEDS_RESET | S_FAILED))
        fail("the device needs a reset after DRIVER_OK");
}

static const char written[] = "flint-fw wrote sector 1";

void fw_main(void *boot_params)
{
    const char *cl = boot_cmdline(boot_params);
    base = device_base(cl);
    puts("flint-fw: virtio-mmio at 0x");
    puthex(base, 0);
    putc('\n');
    if (cmdline_has_word(cl, "blk.ro"))
        puts("flint-fw: expecting a read-only disk\n");
    if (map_mmio(base) != 0)
        fail("the device address is outside 3..4 GiB");

    init_device();
    u64 capacity = read_capacity();
    puts("flint-fw: capacity=0x");
    puthex(capacity, 0);
    putc('\n');

    u32 st, len;
    memset(data, 0, SECTOR);
    st = request(T_IN, 0, SECTOR, 1, &len);
    puts("flint-fw: sector0=");
    putbytes(data, 16);
    put_status(st, len);
    u8 sector0[16];
    memcpy(sector0, data, 16);

    memset(data, 0, SECTOR);
    memcpy(data, written, sizeof written - 1);
    st = request(T_OUT, 1, SECTOR, 0, &len);
    puts("flint-fw: write");
    put_status(st, len);

    memset(data, 0, SECTOR);
    st = request(T_IN, 1, SECTOR, 1, &len);
    puts("flint-fw: sector1=");
    putbytes(data, sizeof written - 1);
    put_status(st, len);

    st = request(T_FLUSH, 0, 0, 0, &len);
    puts("flint-fw: flush");
    put_status(st, len);

    memset(data, 0, ID_BYTES);
    st = request(T_GET_ID, 0, ID_BYTES, 1, &len);
    puts("flint-fw: id=");
    putbytes(data, ID_BYTES); /* NUL-terminated unless all 20 bytes are used */
    put_status(st, len);

    st = request(T_IN, capacity, SECTOR, 1, &len);
    puts("flint-fw: past-end");
    put_status(st, len);

    st = request(T_UNKNOWN, 0, 0, 0, &len);
    puts("flint-fw: unknown-type");
    put_status(st, len);

    /* Twice round the rings: the device must follow the indexes past the queue size. */
    u32 good = 0;
    for (int i = 0; i < 2 * qsize; i++) {
        memset(data, 0, SECTOR);
        st = request(T_IN, 0, SECTOR, 1, &len);
        if (st == 0 && memcmp(data, sector0, 16) == 0)
            good++;
    }
    puts("flint-fw: ring wrap reads=");
    putdec(2 * qsize);
    puts(" good=");
    putdec(good);
    putc('\n');

    puts("flint-fw: interrupt status seen=0x");
    puthex(interrupts_seen, 0);
    putc('\n');
    wr(REG_STATUS, 0); /* reset: the device lets go of our queue */
    puts("flint-fw: virtio-blk done\n");
}
