/*
 * The guest init's run-spec parser as a fuzz target sees it: spec.c is included whole (it is
 * not changed for fuzzing), so that its static parse() can be called on a buffer instead of a
 * file, and everything it allocated freed again after each input.
 *
 * The input is copied to the end of a buffer whose next page is inaccessible: a read of even
 * one byte past the end of the spec faults at once, without AddressSanitizer (which stable
 * Rust's fuzz builds do not have).
 */
#include "spec.c"

#include <sys/mman.h>

/* Inputs longer than this are refused (libFuzzer's -max_len stays below it). */
#define FUZZ_MAX_LEN (1u << 20)

/* What a parsed spec held, for the Rust side to compare with what it encoded. */
struct flint_fuzz_spec_summary {
	size_t n_args, n_env, n_groups, n_rlimits, n_mounts, n_masked, n_readonly, n_sysctls;
	uint32_t uid, gid, umask;
	int has_umask, has_caps, has_hostname, terminal, root_readonly, no_new_privileges;
	uint64_t caps_bounding, caps_ambient;
};

static char *guarded_end; /* one past the last usable byte: the guard page starts here */

static char *guarded_copy(const uint8_t *data, size_t len)
{
	if (guarded_end == NULL) {
		long page = sysconf(_SC_PAGESIZE);
		size_t usable = FUZZ_MAX_LEN;
		char *area = mmap(NULL, usable + (size_t)page, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (area == MAP_FAILED)
			abort();
		if (mprotect(area + usable, (size_t)page, PROT_NONE) != 0)
			abort();
		guarded_end = area + usable;
	}
	char *buf = guarded_end - len;
	if (len > 0)
		memcpy(buf, data, len);
	return buf;
}

static void free_spec(struct run_spec *s)
{
	free(s->args);
	free(s->env);
	free(s->groups);
	free(s->rlimits);
	free(s->mounts);
	free(s->masked);
	free(s->readonly);
	free(s->sysctls);
}

/*
 * Parses `data` as the guest init does. Returns 0 if it accepts the spec (and fills `out`),
 * 1 if it refuses it (with the reason in `why`), -1 if the input is too long to try. With
 * `print`, an accepted spec is also printed as --print-spec does (to stdout).
 */
int flint_fuzz_spec_parse(const uint8_t *data, size_t len, int print,
			  struct flint_fuzz_spec_summary *out, char *why, size_t why_size)
{
	if (len > FUZZ_MAX_LEN)
		return -1;
	struct parser p = {0};
	p.start = p.pos = guarded_copy(data, len);
	p.end = p.start + len;
	struct run_spec s = {0};
	bool ok = parse(&p, &s);
	if (ok) {
		if (print)
			spec_print(&s);
		*out = (struct flint_fuzz_spec_summary){
			.n_args = s.n_args,
			.n_env = s.n_env,
			.n_groups = s.n_groups,
			.n_rlimits = s.n_rlimits,
			.n_mounts = s.n_mounts,
			.n_masked = s.n_masked,
			.n_readonly = s.n_readonly,
			.n_sysctls = s.n_sysctls,
			.uid = s.uid,
			.gid = s.gid,
			.umask = s.umask,
			.has_umask = s.has_umask,
			.has_caps = s.has_caps,
			.has_hostname = s.hostname != NULL,
			.terminal = s.terminal,
			.root_readonly = s.root_readonly,
			.no_new_privileges = s.no_new_privileges,
			.caps_bounding = s.caps.bounding,
			.caps_ambient = s.caps.ambient,
		};
	} else if (why_size > 0) {
		snprintf(why, why_size, "%s", p.why);
	}
	free_spec(&s);
	return ok ? 0 : 1;
}
