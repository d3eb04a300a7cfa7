/* nfsp-lock: take one lock on a file in a kernel-client guest, which has no
 * tool for it (busybox has no flock applet and nothing that takes fcntl
 * byte-range locks). Built static by tests/support/vm.py.
 *
 *   nfsp-lock [-w] [-h] posix|flock r|w FILE [START LEN]
 *
 * -w waits for the lock (F_SETLKW / flock without LOCK_NB); without it a
 * conflicting lock is reported at once. -h holds a granted lock until the
 * process is killed (its exit releases it, as a crashing program's would).
 * Prints "locked", or "busy" followed, for posix locks, by the conflicting
 * lock F_GETLK reports ("busy w 0 100"); exit status 0 locked, 1 busy,
 * 2 any other failure (with the errno text).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

static int usage(void)
{
	fprintf(stderr, "usage: nfsp-lock [-w] [-h] posix|flock r|w FILE [START LEN]\n");
	return 2;
}

static int fail(const char *what)
{
	printf("error %s: %s\n", what, strerror(errno));
	return 2;
}

int main(int argc, char **argv)
{
	int wait = 0, hold = 0, i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-w"))
			wait = 1;
		else if (!strcmp(argv[i], "-h"))
			hold = 1;
		else
			return usage();
	}
	if (argc - i != 3 && argc - i != 5)
		return usage();
	const char *kind = argv[i], *mode = argv[i + 1], *path = argv[i + 2];
	int posix = !strcmp(kind, "posix"), write = !strcmp(mode, "w");
	if ((!posix && strcmp(kind, "flock")) || (!write && strcmp(mode, "r")))
		return usage();
	/* A read lock needs the file open for reading, a write lock for writing. */
	int fd = open(path, (write ? O_RDWR : O_RDONLY) | O_CREAT, 0644);
	if (fd < 0)
		return fail("open");
	int busy;
	struct flock fl = {.l_type = write ? F_WRLCK : F_RDLCK, .l_whence = SEEK_SET};
	if (posix) {
		if (argc - i == 5) {
			fl.l_start = atoll(argv[i + 3]);
			fl.l_len = atoll(argv[i + 4]);
		}
		struct flock want = fl;
		busy = fcntl(fd, wait ? F_SETLKW : F_SETLK, &fl) < 0;
		if (busy && errno != EAGAIN && errno != EACCES)
			return fail("fcntl");
		if (busy) {
			if (fcntl(fd, F_GETLK, &want) < 0)
				return fail("F_GETLK");
			if (want.l_type == F_UNLCK) {
				/* Released between the two calls: say so, not a made-up range. */
				printf("busy gone\n");
			} else {
				printf("busy %s %lld %lld\n", want.l_type == F_WRLCK ? "w" : "r",
				       (long long)want.l_start, (long long)want.l_len);
			}
			return 1;
		}
	} else {
		if (argc - i != 3)
			return usage();
		busy = flock(fd, (write ? LOCK_EX : LOCK_SH) | (wait ? 0 : LOCK_NB)) < 0;
		if (busy && errno != EWOULDBLOCK)
			return fail("flock");
		if (busy) {
			printf("busy\n");
			return 1;
		}
	}
	printf("locked\n");
	fflush(stdout);
	while (hold)
		pause();
	return 0;
}
