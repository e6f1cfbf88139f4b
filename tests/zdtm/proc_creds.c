/*
 * proc_creds: credentials of a process that dropped root.
 *
 * As root, the program chowns STATEDIR to 65534 (so it can still write its
 * result), opens it as a directory fd for the protocol files, sets the
 * supplementary groups {65534, 100, 4242}, then setresgid(65534, 65534, 0)
 * and setresuid(65534, 65534, 0): real/effective nobody, saved uid/gid 0
 * (so it keeps its permitted capabilities but no effective ones).  It
 * records getresuid/getresgid/getgroups, the Uid/Gid/Groups/Cap* lines of
 * /proc/self/status and PR_GET_DUMPABLE.  After go all of these must be
 * unchanged; then behaviour: the uid cannot write /etc, and seteuid(0)
 * works (saved uid 0) and back.
 */
#include "zdtm.h"
#include <grp.h>
#include <sys/prctl.h>

static const char *keys[] = { "Uid:", "Gid:", "Groups:", "CapInh:", "CapPrm:", "CapEff:",
			      "CapBnd:", "CapAmb:", "NoNewPrivs:" };
#define NKEYS (int)(sizeof(keys) / sizeof(keys[0]))

static void snap(char vals[][128])
{
	for (int i = 0; i < NKEYS; i++)
		if (zdtm_status_field("/proc/self/status", keys[i], vals[i], 128))
			strcpy(vals[i], "?");
}

int main(int argc, char **argv)
{
	gid_t groups[3] = { 65534, 100, 4242 }, g[64];
	uid_t ru, eu, su;
	gid_t rg, eg, sg;
	char s0[NKEYS][128], s1[NKEYS][128];
	int ng, dumpable0;

	zdtm_init(argc, argv);
	if (chown(zdtm_dir, 65534, 65534))
		return perror("chown statedir"), 1;
	zdtm_use_dirfd();
	if (setgroups(3, groups) || setresgid(65534, 65534, 0) || setresuid(65534, 65534, 0))
		return perror("dropping privileges"), 1;
	snap(s0);
	dumpable0 = prctl(PR_GET_DUMPABLE);

	zdtm_ready();
	zdtm_wait_go();

	getresuid(&ru, &eu, &su);
	getresgid(&rg, &eg, &sg);
	CHECK(ru == 65534 && eu == 65534 && su == 0, "resuid %d/%d/%d", ru, eu, su);
	CHECK(rg == 65534 && eg == 65534 && sg == 0, "resgid %d/%d/%d", rg, eg, sg);
	ng = getgroups(64, g);
	int found = 0;
	for (int i = 0; i < ng; i++)
		found += g[i] == 65534 || g[i] == 100 || g[i] == 4242;
	CHECK(ng == 3 && found == 3, "getgroups: %d groups (%d expected ones)", ng, found);
	snap(s1);
	for (int i = 0; i < NKEYS; i++)
		CHECK(!strcmp(s0[i], s1[i]), "status %s '%s', was '%s'", keys[i], s1[i], s0[i]);
	CHECK(prctl(PR_GET_DUMPABLE) == dumpable0, "dumpable %d, was %d", prctl(PR_GET_DUMPABLE),
	      dumpable0);
	CHECK(access("/etc", W_OK) == -1 && errno == EACCES, "uid 65534 can write /etc");
	CHECK(seteuid(0) == 0, "seteuid(0) with saved uid 0 failed: %m");
	CHECK(seteuid(65534) == 0 && geteuid() == 65534, "seteuid back to 65534 failed");
	return zdtm_finish();
}
