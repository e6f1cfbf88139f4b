/*
 * mm_exe_cmdline_env: /proc/self/exe, cmdline and environ.
 *
 * Records readlink(/proc/self/exe) (must be the program, i.e. argv[0]), the
 * bytes of /proc/self/cmdline and /proc/self/environ, and the arg/env
 * address fields of /proc/self/stat (48-51).  After go all of them, and the
 * argv[] strings and getenv() of a few variables, must be unchanged.
 */
#include "zdtm.h"

#define BIG 65536

static char exe0[PATH_MAX], cmd0[BIG], env0[BIG], stat0[256];
static ssize_t cmdlen0, envlen0;

static void stat_fields(char *out, size_t len)
{
	char buf[4096], *p;

	zdtm_read("/proc/self/stat", buf, sizeof(buf));
	p = strrchr(buf, ')') + 2; /* field 3 */
	for (int i = 3; i < 48; i++)
		p = strchr(p, ' ') + 1;
	/* fields 48..51: arg_start arg_end env_start env_end */
	unsigned long a, b, c, d;
	sscanf(p, "%lu %lu %lu %lu", &a, &b, &c, &d);
	snprintf(out, len, "%lx %lx %lx %lx", a, b, c, d);
}

int main(int argc, char **argv)
{
	static char exe[PATH_MAX], cmd[BIG], env[BIG], st[256], argv0[PATH_MAX];
	char *path_env = getenv("PATH") ? strdup(getenv("PATH")) : NULL;
	ssize_t n;

	zdtm_init(argc, argv);
	n = readlink("/proc/self/exe", exe0, sizeof(exe0) - 1);
	if (n < 0)
		return perror("readlink"), 1;
	exe0[n] = 0;
	if (!realpath(argv[0], argv0) || strcmp(argv0, exe0))
		fail("/proc/self/exe is %s, argv[0] is %s", exe0, argv[0]);
	cmdlen0 = zdtm_read("/proc/self/cmdline", cmd0, sizeof(cmd0));
	envlen0 = zdtm_read("/proc/self/environ", env0, sizeof(env0));
	stat_fields(stat0, sizeof(stat0));

	zdtm_ready();
	zdtm_wait_go();

	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	exe[n > 0 ? n : 0] = 0;
	CHECK(!strcmp(exe, exe0), "/proc/self/exe is '%s', was '%s'", exe, exe0);
	ssize_t cl = zdtm_read("/proc/self/cmdline", cmd, sizeof(cmd));
	CHECK(cl == cmdlen0 && !memcmp(cmd, cmd0, cl), "/proc/self/cmdline changed ('%s')", cmd);
	ssize_t el = zdtm_read("/proc/self/environ", env, sizeof(env));
	CHECK(el == envlen0 && !memcmp(env, env0, el), "/proc/self/environ changed (%zd/%zd bytes)",
	      el, envlen0);
	stat_fields(st, sizeof(st));
	CHECK(!strcmp(st, stat0), "stat arg/env fields '%s', were '%s'", st, stat0);
	/* the in-memory copies the program itself uses */
	CHECK(argc == 2 && !strcmp(argv[0], cmd0) && !strcmp(argv[1], cmd0 + strlen(cmd0) + 1),
	      "argv[] strings changed");
	CHECK(path_env == NULL || (getenv("PATH") && !strcmp(getenv("PATH"), path_env)),
	      "getenv(PATH) changed");
	return zdtm_finish();
}
