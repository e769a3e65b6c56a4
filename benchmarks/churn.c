/* Short-connection churn for bench_bpf.py: P client and P server processes on
 * 127.0.0.1. Each client connection: connect, send 100 bytes, half-close, read the
 * 200-byte reply until EOF, close. Paced to RATE connections/s in total (0 = as fast
 * as possible) for SECS seconds. Prints the number of completed connections.
 *   churn RATE SECS PROCS */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void serve(int l)
{
	char buf[4096], reply[200];
	memset(reply, 'r', sizeof(reply));
	for (;;) {
		int c = accept(l, NULL, NULL);
		if (c < 0)
			continue;
		while (read(c, buf, sizeof(buf)) > 0)
			;
		if (write(c, reply, sizeof(reply)) < 0)
			perror("write");
		close(c);
	}
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: churn RATE SECS PROCS\n");
		return 2;
	}
	double rate = atof(argv[1]), secs = atof(argv[2]);
	int procs = atoi(argv[3]);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	int one = 1, l = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 4096) || getsockname(l, (struct sockaddr *)&a, &alen)) {
		perror("listen");
		return 1;
	}
	pid_t servers[256], clients[256];
	int pipes[256][2];
	for (int i = 0; i < procs; i++)
		if ((servers[i] = fork()) == 0)
			serve(l);
	for (int i = 0; i < procs; i++) {
		if (pipe(pipes[i]))
			return 1;
		if ((clients[i] = fork()) == 0) {
			char msg[100], buf[4096];
			memset(msg, 's', sizeof(msg));
			long n = 0;
			double t0 = now(), gap = rate > 0 ? procs / rate : 0;
			while (now() - t0 < secs) {
				if (gap > 0) {
					double ahead = t0 + n * gap - now();
					if (ahead > 0) {
						struct timespec ts = {(time_t)ahead, (long)((ahead - (time_t)ahead) * 1e9)};
						nanosleep(&ts, NULL);
					}
				}
				int s = socket(AF_INET, SOCK_STREAM, 0);
				if (connect(s, (struct sockaddr *)&a, sizeof(a))) {
					close(s);
					continue;
				}
				if (write(s, msg, sizeof(msg)) < 0) {
					close(s);
					continue;
				}
				shutdown(s, SHUT_WR);
				while (read(s, buf, sizeof(buf)) > 0)
					;
				close(s);
				n++;
			}
			if (write(pipes[i][1], &n, sizeof(n)) < 0)
				perror("write");
			_exit(0);
		}
	}
	long total = 0;
	for (int i = 0; i < procs; i++) {
		long n = 0;
		if (read(pipes[i][0], &n, sizeof(n)) == sizeof(n))
			total += n;
		waitpid(clients[i], NULL, 0);
	}
	for (int i = 0; i < procs; i++) {
		kill(servers[i], SIGKILL);
		waitpid(servers[i], NULL, 0);
	}
	printf("%ld\n", total);
	return 0;
}
