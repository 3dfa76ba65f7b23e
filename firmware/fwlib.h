/* Helpers for firmware written in C (linked with crt64.S and fwlib.c by build.rs).
   Freestanding: no libc, integer instructions only (the PVM emulator may not do SSE/x87). */
#ifndef FLINT_FWLIB_H
#define FLINT_FWLIB_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef unsigned long usize;

#define NULL ((void *)0)

/* The program: crt64.S calls it with RSI from the boot (the zero page) and powers off when it
   returns. */
void fw_main(void *boot_params);

/* Compiler barrier: x86 keeps stores in order, so this is all shared rings need. */
#define barrier() __asm__ __volatile__("" ::: "memory")

/* Port I/O. */
static inline void outb(u16 port, u8 v)
{
    __asm__ __volatile__("outb %0, %1" ::"a"(v), "Nd"(port));
}
static inline void outw(u16 port, u16 v)
{
    __asm__ __volatile__("outw %0, %1" ::"a"(v), "Nd"(port));
}
static inline void outl(u16 port, u32 v)
{
    __asm__ __volatile__("outl %0, %1" ::"a"(v), "Nd"(port));
}
static inline u8 inb(u16 port)
{
    u8 v;
    __asm__ __volatile__("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline u16 inw(u16 port)
{
    u16 v;
    __asm__ __volatile__("inw %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline u32 inl(u16 port)
{
    u32 v;
    __asm__ __volatile__("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

/* MMIO: one access of exactly the given width (volatile), never merged or split. */
static inline u8 mmio_read8(u64 a) { return *(volatile u8 *)a; }
static inline u16 mmio_read16(u64 a) { return *(volatile u16 *)a; }
static inline u32 mmio_read32(u64 a) { return *(volatile u32 *)a; }
static inline void mmio_write8(u64 a, u8 v) { *(volatile u8 *)a = v; }
static inline void mmio_write16(u64 a, u16 v) { *(volatile u16 *)a = v; }
static inline void mmio_write32(u64 a, u32 v) { *(volatile u32 *)a = v; }

static inline u64 rdtsc(void)
{
    u32 lo, hi;
    __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}

static inline void cpu_relax(void) { __asm__ __volatile__("pause" ::: "memory"); }

/* Serial console (COM1, output only). */
void putc(char c);
void puts(const char *s);
/* v in hex, at least `digits` digits (16 = the full u64, as lib64.inc's puthex; 0 = as few as
   needed), no prefix. */
void puthex(u64 v, int digits);
void putdec(u64 v);
/* The n bytes at p as text, anything unprintable as '.', stopping at the first NUL. */
void putbytes(const void *p, usize n);

/* Power off through the i8042 reset (flint treats it as power-off). */
void shutdown(void) __attribute__((noreturn));
/* Prints "flint-fw: error: MSG" and powers off. */
void fail(const char *msg) __attribute__((noreturn));

/* Maps the 2 MiB page holding addr (which must be in 3..4 GiB, the MMIO hole) identity,
   uncached: flint's boot page tables map only the first 1 GiB. Returns 0, or -1 if addr is out
   of that range. */
int map_mmio(u64 addr);

/* The kernel command line from the zero page (struct boot_params). */
const char *boot_cmdline(const void *boot_params);
/* True if the whitespace-separated word occurs in the command line. */
int cmdline_has_word(const char *cmdline, const char *word);
/* The text just after the first occurrence of key in s, or NULL. */
const char *find_after(const char *s, const char *key);
/* Parses hex digits (an optional 0x prefix) at s into *v; returns the number of digits read. */
int parse_hex(const char *s, u64 *v);

usize strlen(const char *s);
int memcmp(const void *a, const void *b, usize n);
/* gcc may emit calls to these for struct copies and zeroing even when freestanding. */
void *memset(void *d, int c, usize n);
void *memcpy(void *d, const void *s, usize n);

#endif
