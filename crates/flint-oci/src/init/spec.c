/*
 * flint's guest init: the run spec. The host writes it (src/oci/spec.rs, which documents the
 * format): the magic, then records of a keyword and a fixed number of arguments, then `end`;
 * every item is a NUL-terminated string. Everything is bounds-checked: a spec that does not
 * follow the format exactly is refused with a message saying where and why.
 */
#include "flint-init.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SPEC_MAGIC "flint-spec-1"

/* Far more than any real spec; a bound so that a broken file cannot exhaust the guest's memory. */
#define SPEC_MAX_SIZE (64u << 20)

enum keyword {
	KW_ARG,
	KW_ENV,
	KW_CWD,
	KW_UID,
	KW_GID,
	KW_GROUP,
	KW_UMASK,
	KW_HOSTNAME,
	KW_TERMINAL,
	KW_ROOT_READONLY,
	KW_ROOT_FS,
	KW_NO_NEW_PRIVILEGES,
	KW_RLIMIT,
	KW_CAPS,
	KW_OOM_SCORE_ADJ,
	KW_PIDS_LIMIT,
	KW_SECCOMP,
	KW_MOUNT,
	KW_FS_MOUNT,
	KW_FILE,
	KW_MASKED,
	KW_READONLY_PATH,
	KW_SYSCTL,
	KW_END,
	KW_COUNT
};

#define MAX_RECORD_ARGS 5

static const struct {
	const char *name;
	unsigned n_args;
	bool repeatable; /* a list item; the others may appear once */
} keywords[KW_COUNT] = {
	[KW_ARG] = {"arg", 1, true},
	[KW_ENV] = {"env", 1, true},
	[KW_CWD] = {"cwd", 1, false},
	[KW_UID] = {"uid", 1, false},
	[KW_GID] = {"gid", 1, false},
	[KW_GROUP] = {"group", 1, true},
	[KW_UMASK] = {"umask", 1, false},
	[KW_HOSTNAME] = {"hostname", 1, false},
	[KW_TERMINAL] = {"terminal", 1, false},
	[KW_ROOT_READONLY] = {"root-readonly", 1, false},
	[KW_ROOT_FS] = {"root-fs", 1, false},
	[KW_NO_NEW_PRIVILEGES] = {"no-new-privileges", 1, false},
	[KW_RLIMIT] = {"rlimit", 3, true},
	[KW_CAPS] = {"caps", 5, false},
	[KW_OOM_SCORE_ADJ] = {"oom-score-adj", 1, false},
	[KW_PIDS_LIMIT] = {"pids-limit", 1, false},
	[KW_SECCOMP] = {"seccomp", 2, false},
	[KW_MOUNT] = {"mount", 5, true},
	[KW_FS_MOUNT] = {"fs-mount", 5, true},
	[KW_FILE] = {"file", 4, true},
	[KW_MASKED] = {"masked", 1, true},
	[KW_READONLY_PATH] = {"readonly-path", 1, true},
	[KW_SYSCTL] = {"sysctl", 2, true},
	[KW_END] = {"end", 0, false},
};

/* Parsing state: the unread part of the spec, and the reason if it was refused. */
struct parser {
	const char *start;
	const char *pos;
	const char *end;
	size_t file_bytes; /* the `file` records' contents so far */
	char why[512];
};

/* Records why the spec is refused; returns false for the caller to return. */
__attribute__((format(printf, 2, 3))) static bool refuse(struct parser *p, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p->why, sizeof p->why, fmt, ap);
	va_end(ap);
	return false;
}

/*
 * Whether byte `c` is shown as \xHH: anything that could split or blur a line or a field
 * (controls, space, DEL) and the backslash itself. UTF-8 passes through.
 */
static bool needs_escape(unsigned char c)
{
	return c <= ' ' || c == 0x7f || c == '\\';
}

/* Copies `s` escaped into buf (of `size` > 4 bytes), cut short with "..." if it is too long. */
static const char *escaped(const char *s, char *buf, size_t size)
{
	size_t n = 0;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		size_t need = needs_escape(c) ? 4 : 1;
		if (n + need + 4 > size) {
			memcpy(buf + n, "...", 4);
			return buf;
		}
		if (need == 4)
			n += (size_t)snprintf(buf + n, size - n, "\\x%02x", c);
		else
			buf[n++] = (char)c;
	}
	buf[n] = '\0';
	return buf;
}

static size_t offset(const struct parser *p)
{
	return (size_t)(p->pos - p->start);
}

/* Takes the next string: 1 if there is one, 0 at the end of the data, -1 if it has no NUL. */
static int next_string(struct parser *p, const char **s)
{
	if (p->pos == p->end)
		return 0;
	const char *nul = memchr(p->pos, '\0', (size_t)(p->end - p->pos));
	if (nul == NULL)
		return -1;
	*s = p->pos;
	p->pos = nul + 1;
	return 1;
}

/*
 * Returns `array` (of `len` elements of `size` bytes) with room for one more element and a
 * spare one after it (for the NULL that ends argv and envp), or NULL if out of memory. The
 * capacity doubles whenever len reaches a power of two, so it needs no field of its own.
 */
static void *grow(void *array, size_t len, size_t size)
{
	if (len & (len - 1))
		return array; /* not 0 nor a power of two: there is room */
	size_t capacity = len == 0 ? 1 : 2 * len;
	if (capacity > SIZE_MAX / size - 1)
		return NULL;
	return realloc(array, (capacity + 1) * size);
}

static bool append_string(struct parser *p, const char ***list, size_t *len, const char *s)
{
	const char **grown = grow(*list, *len, sizeof *grown);
	if (grown == NULL)
		return refuse(p, "out of memory");
	*list = grown;
	grown[(*len)++] = s;
	return true;
}

/* An unsigned decimal number up to `max`: digits only, at least one. */
static bool parse_number(struct parser *p, const char *what, const char *text, uint64_t max,
			 uint64_t *out)
{
	uint64_t v = 0;
	for (const char *c = text; *c; c++) {
		if (*c < '0' || *c > '9')
			goto bad;
		unsigned digit = (unsigned)(*c - '0');
		if (v > (max - digit) / 10)
			goto bad;
		v = v * 10 + digit;
	}
	if (*text == '\0')
		goto bad;
	*out = v;
	return true;
bad:;
	char shown[64];
	return refuse(p, "%s: \"%s\" is not a decimal number up to %" PRIu64, what,
		      escaped(text, shown, sizeof shown), max);
}

static bool parse_u32(struct parser *p, const char *what, const char *text, uint32_t *out)
{
	uint64_t v;
	if (!parse_number(p, what, text, UINT32_MAX, &v))
		return false;
	*out = (uint32_t)v;
	return true;
}

static bool parse_flag(struct parser *p, const char *what, const char *text, bool *out)
{
	if (strcmp(text, "0") != 0 && strcmp(text, "1") != 0) {
		char shown[64];
		return refuse(p, "%s: \"%s\" is not 0 or 1", what, escaped(text, shown, sizeof shown));
	}
	*out = text[0] == '1';
	return true;
}

/* oom-score-adj: a decimal number from -1000 to 1000, "-" allowed (not "-0" or "+"). */
static bool parse_oom_score_adj(struct parser *p, const char *text, int *out)
{
	bool negative = text[0] == '-';
	uint64_t v;
	if (negative && strcmp(text, "-0") == 0)
		goto bad;
	if (!parse_number(p, "oom-score-adj", text + negative, 1000, &v))
		goto bad;
	*out = negative ? -(int)v : (int)v;
	return true;
bad:;
	char shown[64];
	return refuse(p, "oom-score-adj: \"%s\" is not a decimal number from -1000 to 1000",
		      escaped(text, shown, sizeof shown));
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* `n` lower-case hex digits at `text` as a number; false if one is not. */
static bool hex_field(const char *text, unsigned n, uint32_t *out)
{
	uint32_t v = 0;
	for (unsigned i = 0; i < n; i++) {
		int d = hex_digit(text[i]);
		if (d < 0)
			return false;
		v = v << 4 | (uint32_t)d;
	}
	*out = v;
	return true;
}

/*
 * The seccomp record's program: 16 hex digits per instruction (code, jt, jf, k), 1 to
 * BPF_MAXINSNS instructions. The kernel checks the program itself when it is installed.
 */
static bool parse_program(struct parser *p, const char *text, struct run_spec *s)
{
	size_t len = strlen(text);
	if (len == 0 || len % 16 != 0 || len / 16 > BPF_MAXINSNS)
		return refuse(p, "seccomp: a program of %zu hex digits is not 1 to %d instructions of 16",
			      len, BPF_MAXINSNS);
	size_t n = len / 16;
	struct sock_filter *prog = calloc(n, sizeof *prog);
	if (prog == NULL)
		return refuse(p, "out of memory");
	for (size_t i = 0; i < n; i++) {
		const char *at = text + 16 * i;
		uint32_t code, jt, jf, k;
		if (!hex_field(at, 4, &code) || !hex_field(at + 4, 2, &jt) ||
		    !hex_field(at + 6, 2, &jf) || !hex_field(at + 8, 8, &k)) {
			free(prog);
			return refuse(p, "seccomp: instruction %zu is not 16 lower-case hex digits", i);
		}
		prog[i] = (struct sock_filter){.code = (uint16_t)code, .jt = (uint8_t)jt,
					       .jf = (uint8_t)jf, .k = k};
	}
	s->seccomp = prog;
	s->n_seccomp = n;
	return true;
}

/*
 * A share's tag, or a name inside it: one path component (the init mounts the share at
 * /flint/fs/TAG and binds TAG/NAME from there), so never "", ".", ".." or with a "/". A tag
 * is also at most FS_TAG_MAX bytes.
 */
static bool check_name(struct parser *p, const char *what, const char *name, size_t max)
{
	char shown[64];
	if (name[0] == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0 ||
	    strchr(name, '/') != NULL)
		return refuse(p, "%s \"%s\" is not a name (one path component)", what,
			      escaped(name, shown, sizeof shown));
	if (strlen(name) > max)
		return refuse(p, "%s \"%s\" is longer than %zu bytes", what,
			      escaped(name, shown, sizeof shown), max);
	return true;
}

static bool append_mount(struct parser *p, struct run_spec *s, struct spec_mount m)
{
	struct spec_mount *mounts = grow(s->mounts, s->n_mounts, sizeof *mounts);
	if (mounts == NULL)
		return refuse(p, "out of memory");
	s->mounts = mounts;
	mounts[s->n_mounts++] = m;
	return true;
}

/* Stores one record's arguments `a` into the spec. */
static bool apply(struct parser *p, struct run_spec *s, enum keyword kw, const char **a)
{
	uint32_t n;
	switch (kw) {
	case KW_ARG:
		return append_string(p, &s->args, &s->n_args, a[0]);
	case KW_ENV:
		return append_string(p, &s->env, &s->n_env, a[0]);
	case KW_CWD:
		s->cwd = a[0];
		return true;
	case KW_UID:
		if (!parse_u32(p, "uid", a[0], &n))
			return false;
		s->uid = n;
		return true;
	case KW_GID:
		if (!parse_u32(p, "gid", a[0], &n))
			return false;
		s->gid = n;
		return true;
	case KW_GROUP: {
		if (!parse_u32(p, "group", a[0], &n))
			return false;
		gid_t *groups = grow(s->groups, s->n_groups, sizeof *groups);
		if (groups == NULL)
			return refuse(p, "out of memory");
		s->groups = groups;
		groups[s->n_groups++] = n;
		return true;
	}
	case KW_UMASK:
		if (!parse_u32(p, "umask", a[0], &n))
			return false;
		if (n > 0777)
			return refuse(p, "umask: %" PRIu32 " is more than 0777 (511)", n);
		s->has_umask = true;
		s->umask = n;
		return true;
	case KW_HOSTNAME:
		s->hostname = a[0];
		return true;
	case KW_TERMINAL:
		return parse_flag(p, "terminal", a[0], &s->terminal);
	case KW_ROOT_READONLY:
		return parse_flag(p, "root-readonly", a[0], &s->root_readonly);
	case KW_ROOT_FS:
		if (!check_name(p, "root-fs tag", a[0], FS_TAG_MAX))
			return false;
		s->root_fs = a[0];
		return true;
	case KW_NO_NEW_PRIVILEGES:
		return parse_flag(p, "no-new-privileges", a[0], &s->no_new_privileges);
	case KW_RLIMIT: {
		struct spec_rlimit r;
		if (!parse_u32(p, "rlimit resource", a[0], &n) ||
		    !parse_number(p, "rlimit soft", a[1], UINT64_MAX, &r.soft) ||
		    !parse_number(p, "rlimit hard", a[2], UINT64_MAX, &r.hard))
			return false;
		r.resource = n;
		struct spec_rlimit *rlimits = grow(s->rlimits, s->n_rlimits, sizeof r);
		if (rlimits == NULL)
			return refuse(p, "out of memory");
		s->rlimits = rlimits;
		rlimits[s->n_rlimits++] = r;
		return true;
	}
	case KW_CAPS:
		s->has_caps = true;
		return parse_number(p, "caps bounding", a[0], UINT64_MAX, &s->caps.bounding) &&
		       parse_number(p, "caps effective", a[1], UINT64_MAX, &s->caps.effective) &&
		       parse_number(p, "caps inheritable", a[2], UINT64_MAX, &s->caps.inheritable) &&
		       parse_number(p, "caps permitted", a[3], UINT64_MAX, &s->caps.permitted) &&
		       parse_number(p, "caps ambient", a[4], UINT64_MAX, &s->caps.ambient);
	case KW_OOM_SCORE_ADJ:
		s->has_oom_score_adj = true;
		return parse_oom_score_adj(p, a[0], &s->oom_score_adj);
	case KW_PIDS_LIMIT:
		if (!parse_number(p, "pids-limit", a[0], UINT64_MAX, &s->pids_limit))
			return false;
		if (s->pids_limit == 0)
			return refuse(p, "pids-limit: 0 would allow no process at all");
		return true;
	case KW_SECCOMP: {
		uint32_t flags;
		if (!parse_u32(p, "seccomp flags", a[0], &flags))
			return false;
		s->seccomp_flags = flags;
		return parse_program(p, a[1], s);
	}
	case KW_FILE: {
		uint64_t mode, flags;
		size_t len = strlen(a[3]);
		if (!parse_number(p, "file mode", a[1], 0777, &mode) ||
		    !parse_number(p, "file flags", a[2], ULONG_MAX, &flags))
			return false;
		if (len > FILE_CONTENT_MAX)
			return refuse(p, "file %s: %zu bytes, more than %u", a[0], len,
				      FILE_CONTENT_MAX);
		p->file_bytes += len;
		if (p->file_bytes > FILES_TOTAL_MAX)
			return refuse(p, "file records: more than %u bytes in all", FILES_TOTAL_MAX);
		return append_mount(p, s,
				    (struct spec_mount){
					    .kind = MOUNT_FILE,
					    .destination = a[0],
					    .fstype = "",
					    .source = "",
					    .flags = (unsigned long)flags,
					    .data = "",
					    .mode = (mode_t)mode,
					    .content = a[3],
				    });
	}
	case KW_MOUNT: {
		uint64_t flags;
		if (!parse_number(p, "mount flags", a[3], ULONG_MAX, &flags))
			return false;
		return append_mount(p, s,
				    (struct spec_mount){
					    .destination = a[0],
					    .fstype = a[1],
					    .source = a[2],
					    .flags = (unsigned long)flags,
					    .data = a[4],
				    });
	}
	case KW_FS_MOUNT: {
		uint64_t flags;
		if (!check_name(p, "fs-mount tag", a[0], FS_TAG_MAX) ||
		    (a[1][0] != '\0' && !check_name(p, "fs-mount subpath", a[1], SIZE_MAX)) ||
		    !parse_number(p, "fs-mount flags", a[3], ULONG_MAX, &flags))
			return false;
		return append_mount(p, s,
				    (struct spec_mount){
					    .kind = MOUNT_SHARE,
					    .tag = a[0],
					    .subpath = a[1],
					    .destination = a[2],
					    .fstype = "",
					    .source = "",
					    .flags = (unsigned long)flags,
					    .data = a[4],
				    });
	}
	case KW_MASKED:
		return append_string(p, &s->masked, &s->n_masked, a[0]);
	case KW_READONLY_PATH:
		return append_string(p, &s->readonly, &s->n_readonly, a[0]);
	case KW_SYSCTL: {
		struct spec_sysctl *sysctls = grow(s->sysctls, s->n_sysctls, sizeof *sysctls);
		if (sysctls == NULL)
			return refuse(p, "out of memory");
		s->sysctls = sysctls;
		sysctls[s->n_sysctls++] = (struct spec_sysctl){.key = a[0], .value = a[1]};
		return true;
	}
	case KW_END:
	case KW_COUNT:
		break;
	}
	return refuse(p, "internal error: keyword %d has no handler", (int)kw);
}

static int find_keyword(const char *word)
{
	for (int k = 0; k < KW_COUNT; k++)
		if (strcmp(word, keywords[k].name) == 0)
			return k;
	return -1;
}

/* Reads one record (its keyword is already read) and applies it. */
static bool parse_record(struct parser *p, struct run_spec *s, enum keyword kw, size_t at)
{
	const char *a[MAX_RECORD_ARGS];
	for (unsigned i = 0; i < keywords[kw].n_args; i++) {
		int got = next_string(p, &a[i]);
		if (got <= 0)
			return refuse(p,
				      "truncated: the %s record at byte %zu has %u of its %u arguments%s",
				      keywords[kw].name, at, i, keywords[kw].n_args,
				      got < 0 ? " and an unterminated string" : "");
	}
	return apply(p, s, kw, a);
}

/* The checks a whole spec must pass; a list of NULL-terminated strings is finished here. */
static bool finish(struct parser *p, struct run_spec *s)
{
	if (p->pos != p->end)
		return refuse(p, "%zu bytes after the end record", (size_t)(p->end - p->pos));
	if (s->n_args == 0)
		return refuse(p, "no arg record: the process has no program to run");
	if (s->cwd == NULL)
		return refuse(p, "no cwd record");
	if (s->cwd[0] != '/') {
		char shown[64];
		return refuse(p, "cwd \"%s\" is not an absolute path",
			      escaped(s->cwd, shown, sizeof shown));
	}
	/* grow() always leaves a spare element after the last for the NULL. */
	if (s->env == NULL && (s->env = grow(NULL, 0, sizeof *s->env)) == NULL)
		return refuse(p, "out of memory");
	s->args[s->n_args] = NULL;
	s->env[s->n_env] = NULL;
	return true;
}

static bool parse(struct parser *p, struct run_spec *s)
{
	const char *magic;
	if (next_string(p, &magic) != 1 || strcmp(magic, SPEC_MAGIC) != 0)
		return refuse(p, "wrong magic: not a " SPEC_MAGIC " file");

	unsigned seen = 0; /* bit K: keyword K was seen */
	for (;;) {
		size_t at = offset(p);
		const char *word;
		int got = next_string(p, &word);
		if (got == 0)
			return refuse(p, "truncated: no end record");
		if (got < 0)
			return refuse(p, "truncated: unterminated string at byte %zu", at);

		int kw = find_keyword(word);
		if (kw < 0) {
			char shown[64];
			return refuse(p, "unknown keyword \"%s\" at byte %zu",
				      escaped(word, shown, sizeof shown), at);
		}
		if (kw == KW_END)
			return finish(p, s);
		if (!keywords[kw].repeatable && (seen & (1u << kw)))
			return refuse(p, "more than one %s record (the second at byte %zu)",
				      keywords[kw].name, at);
		seen |= 1u << kw;
		if (!parse_record(p, s, (enum keyword)kw, at))
			return false;
	}
}

/* Reads a whole file into memory; NULL with errno on failure. */
static char *read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	size_t size = 0, capacity = 0;
	char *buf = NULL;
	for (;;) {
		if (size == capacity) {
			if (capacity >= SPEC_MAX_SIZE) {
				errno = EFBIG;
				goto fail;
			}
			capacity = capacity ? 2 * capacity : 64 * 1024;
			char *bigger = realloc(buf, capacity);
			if (bigger == NULL)
				goto fail;
			buf = bigger;
		}
		ssize_t n = read(fd, buf + size, capacity - size);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto fail;
		if (n == 0)
			break;
		size += (size_t)n;
	}
	close(fd);
	*len = size;
	return buf;
fail:;
	int saved = errno;
	close(fd);
	free(buf);
	errno = saved;
	return NULL;
}

int spec_parse(const char *data, size_t len, struct run_spec *spec, char *why, size_t why_size)
{
	*spec = (struct run_spec){0};
	struct parser p = {.start = data, .pos = data, .end = data + len};
	if (!parse(&p, spec)) {
		snprintf(why, why_size, "%s", p.why);
		return -1;
	}
	return 0;
}

void spec_free(struct run_spec *s)
{
	free(s->args);
	free(s->env);
	free(s->groups);
	free(s->rlimits);
	free(s->seccomp);
	free(s->mounts);
	free(s->masked);
	free(s->readonly);
	free(s->sysctls);
	*s = (struct run_spec){0};
}

int spec_load(const char *path, struct run_spec *spec, char *error, size_t error_size)
{
	size_t len;
	char *data = read_file(path, &len);
	if (data == NULL) {
		snprintf(error, error_size, "read the run spec %s: %s", path, strerror(errno));
		return -1;
	}
	char why[512];
	if (spec_parse(data, len, spec, why, sizeof why) < 0) {
		snprintf(error, error_size, "bad run spec %s: %s", path, why);
		return -1;
	}
	/* The spec's strings point into data, which therefore stays allocated. */
	return 0;
}

/* --print-spec: the spec, one item a line, in the format's order; see init_tests.rs. */

/* Prints " " and the string escaped (so a line splits into its fields on spaces). */
static void print_field(const char *s)
{
	putchar(' ');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (needs_escape(c))
			printf("\\x%02x", c);
		else
			putchar(c);
	}
}

static void print_strings(const char *keyword, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		fputs(keyword, stdout);
		print_field(list[i]);
		putchar('\n');
	}
}

void spec_print(const struct run_spec *s)
{
	print_strings("arg", s->args, s->n_args);
	print_strings("env", s->env, s->n_env);
	print_strings("cwd", &s->cwd, 1);
	printf("uid %u\ngid %u\n", (unsigned)s->uid, (unsigned)s->gid);
	for (size_t i = 0; i < s->n_groups; i++)
		printf("group %u\n", (unsigned)s->groups[i]);
	if (s->has_umask)
		printf("umask %u\n", (unsigned)s->umask);
	if (s->hostname != NULL)
		print_strings("hostname", &s->hostname, 1);
	printf("terminal %d\nroot-readonly %d\n", s->terminal, s->root_readonly);
	if (s->root_fs != NULL)
		print_strings("root-fs", &s->root_fs, 1);
	printf("no-new-privileges %d\n", s->no_new_privileges);
	for (size_t i = 0; i < s->n_rlimits; i++)
		printf("rlimit %u %" PRIu64 " %" PRIu64 "\n", s->rlimits[i].resource,
		       s->rlimits[i].soft, s->rlimits[i].hard);
	if (s->has_caps)
		printf("caps %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
		       s->caps.bounding, s->caps.effective, s->caps.inheritable,
		       s->caps.permitted, s->caps.ambient);
	if (s->has_oom_score_adj)
		printf("oom-score-adj %d\n", s->oom_score_adj);
	if (s->pids_limit != 0)
		printf("pids-limit %" PRIu64 "\n", s->pids_limit);
	if (s->seccomp != NULL) {
		printf("seccomp %u ", s->seccomp_flags);
		for (size_t i = 0; i < s->n_seccomp; i++) {
			const struct sock_filter *f = &s->seccomp[i];
			printf("%04x%02x%02x%08x", f->code, f->jt, f->jf, (unsigned)f->k);
		}
		putchar('\n');
	}
	for (size_t i = 0; i < s->n_mounts; i++) {
		const struct spec_mount *m = &s->mounts[i];
		if (m->kind == MOUNT_FILE) {
			fputs("file", stdout);
			print_field(m->destination);
			printf(" %o %lu", (unsigned)m->mode, m->flags);
			print_field(m->content);
			putchar('\n');
			continue;
		}
		if (m->kind == MOUNT_SHARE) {
			fputs("fs-mount", stdout);
			print_field(m->tag);
			print_field(m->subpath);
			print_field(m->destination);
		} else {
			fputs("mount", stdout);
			print_field(m->destination);
			print_field(m->fstype);
			print_field(m->source);
		}
		printf(" %lu", m->flags);
		print_field(m->data);
		putchar('\n');
	}
	print_strings("masked", s->masked, s->n_masked);
	print_strings("readonly-path", s->readonly, s->n_readonly);
	for (size_t i = 0; i < s->n_sysctls; i++) {
		fputs("sysctl", stdout);
		print_field(s->sysctls[i].key);
		print_field(s->sysctls[i].value);
		putchar('\n');
	}
}
