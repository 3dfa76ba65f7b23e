/* Helpers for firmware written in C: see fwlib.h. */
#include "fwlib.h"

#define COM1 0x3f8

void putc(char c) { outb(COM1, (u8)c); }

void puts(const char *s)
{
    while (*s)
        putc(*s++);
}

void puthex(u64 v, int digits)
{
    int n = 1;
    while (n < 16 && (v >> (4 * n)) != 0)
        n++;
    if (n < digits)
        n = digits;
    while (n-- > 0)
        putc("0123456789abcdef"[(v >> (4 * n)) & 0xf]);
}

void putdec(u64 v)
{
    char buf[20];
    int n = 0;
    do {
        buf[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n-- > 0)
        putc(buf[n]);
}

void putbytes(const void *p, usize n)
{
    const u8 *b = p;
    for (usize i = 0; i < n && b[i]; i++)
        putc(b[i] >= 0x20 && b[i] < 0x7f ? (char)b[i] : '.');
}

void shutdown(void)
{
    outb(0x64, 0xfe);
    for (;;)
        __asm__ __volatile__("hlt");
}

void fail(const char *msg)
{
    puts("flint-fw: error: ");
    puts(msg);
    putc('\n');
    shutdown();
}

/* Page-table entry bits. */
#define PTE_PRESENT 0x1ULL
#define PTE_WRITE 0x2ULL
#define PTE_PCD 0x10ULL /* cache disable */
#define PTE_HUGE 0x80ULL /* 2 MiB page in a PD entry, 1 GiB in a PDPT entry */
#define PTE_ADDR 0x000ffffffffff000ULL

#define GIB (1ULL << 30)
#define PAGE_2M (2ULL << 20)

/* The page directory for 3..4 GiB, if flint's tables have none. */
static u64 pd_high[512] __attribute__((aligned(4096)));

int map_mmio(u64 addr)
{
    if (addr < 3 * GIB || addr >= 4 * GIB)
        return -1;
    u64 cr3;
    __asm__ __volatile__("mov %%cr3, %0" : "=r"(cr3));
    /* The tables live in the identity-mapped first 1 GiB: physical = virtual. */
    u64 *pml4 = (u64 *)(cr3 & PTE_ADDR);
    u64 *pdpt = (u64 *)(pml4[0] & PTE_ADDR);
    u64 e = pdpt[3];
    if (!(e & PTE_PRESENT) || (e & PTE_HUGE)) {
        pdpt[3] = (u64)pd_high | PTE_PRESENT | PTE_WRITE;
        e = pdpt[3];
    }
    u64 *pd = (u64 *)(e & PTE_ADDR);
    pd[(addr - 3 * GIB) / PAGE_2M] =
        (addr & ~(PAGE_2M - 1)) | PTE_PRESENT | PTE_WRITE | PTE_PCD | PTE_HUGE;
    __asm__ __volatile__("mov %0, %%cr3" ::"r"(cr3) : "memory"); /* flush the TLB */
    return 0;
}

const char *boot_cmdline(const void *boot_params)
{
    /* hdr.cmd_line_ptr, a 32-bit physical address */
    u32 p = *(const u32 *)((const u8 *)boot_params + 0x228);
    return p ? (const char *)(usize)p : "";
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n'; }

int cmdline_has_word(const char *cl, const char *word)
{
    usize n = strlen(word);
    while (*cl) {
        while (is_space(*cl))
            cl++;
        const char *start = cl;
        while (*cl && !is_space(*cl))
            cl++;
        if ((usize)(cl - start) == n && memcmp(start, word, n) == 0)
            return 1;
    }
    return 0;
}

const char *find_after(const char *s, const char *key)
{
    usize n = strlen(key);
    for (; *s; s++)
        if (memcmp(s, key, n) == 0)
            return s + n;
    return NULL;
}

int parse_hex(const char *s, u64 *v)
{
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        s += 2;
    u64 r = 0;
    int n = 0;
    for (;; n++, s++) {
        char c = *s;
        int d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            break;
        r = (r << 4) | (u64)d;
    }
    *v = r;
    return n;
}

usize strlen(const char *s)
{
    usize n = 0;
    while (s[n])
        n++;
    return n;
}

int memcmp(const void *a, const void *b, usize n)
{
    const u8 *x = a, *y = b;
    for (usize i = 0; i < n; i++)
        if (x[i] != y[i])
            return x[i] < y[i] ? -1 : 1;
    return 0;
}

void *memset(void *d, int c, usize n)
{
    u8 *p = d;
    for (usize i = 0; i < n; i++)
        p[i] = (u8)c;
    return d;
}

void *memcpy(void *d, const void *s, usize n)
{
    u8 *p = d;
    const u8 *q = s;
    for (usize i = 0; i < n; i++)
        p[i] = q[i];
    return d;
}
