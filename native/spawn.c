// The start of a vassal process, vfork-style (issue 13).
//
// Node's child_process.spawn runs libuv's uv_spawn, which fork()s: the kernel copies the page
// tables of the whole emperor (V8 heap included) and the event loop waits for it, 6-10 ms per
// start on a small VM, most of the time it takes to bring 200 apps up. Here the child is made
// with clone(CLONE_VM | CLONE_VFORK), as glibc's posix_spawn makes its children: nothing is
// copied, the cost does not grow with the emperor, and the calling thread waits only until the
// child has exec'd.
//
// What the child gets is what uv_spawn gives it with `detached: true`: its own session (so its
// own process group, pgid = pid), every signal at its default disposition and none blocked,
// fds 0..n as asked (/dev/null or one end of a fresh socketpair, as libuv's 'pipe' is), the
// working directory and environment given, and nothing else (every other fd of the emperor is
// close-on-exec, as libuv and Node open them all). Before it execs it also does what a /bin/sh
// wrapper used to do, one exec per start earlier (posix_spawn cannot): it moves itself into
// the vassal's cgroups (so the app can never fork outside them), sets RLIMIT_NOFILE, and takes a
// parent-death signal. A step that fails is reported as the spawn's error; nothing runs.
//
// The exit is learnt from SIGCHLD on the emperor's own event loop (a libuv signal watcher, beside
// the one libuv keeps for child_process): each SIGCHLD, the exited children that are ours are
// reaped with waitid. libuv reaps only the pids it spawned, so it never takes ours; until we
// reap it a child is a zombie at worst, and its pid cannot be reused while the emperor still
// holds it. No descriptor per child (a pidfd per child was a quarter of the emperor's
// descriptors with 5,000 vassals: a 20,000 open-files limit then started only 4,985).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <signal.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>


extern char **environ;

#define MAX_FDS 8

typedef struct child_s {
  struct child_s *next;  // in its bucket of the table below
  napi_env env;
  napi_ref callback;
  napi_async_context context;
  pid_t pid;
  siginfo_t info;        // how it exited, once reaped
} child_t;

// Our live children by pid, so a zombie the kernel names can be told from child_process's.
// Only the thread that started the first child (the emperor's main thread) uses it.
#define BUCKETS 4096
static child_t *table[BUCKETS];
static size_t live;
static uv_signal_t sigchld;
static uv_loop_t *watch_loop;

// Worded as Node's own spawn errors ("spawn FILE ENOENT"), with the system's text after.
static napi_value throw_errno(napi_env env, int err, const char *syscall, const char *file) {
  napi_value msg, code, error, sys;
  // The same codes Node's own errors carry (ENOENT, EAGAIN, EMFILE...): callers match on them.
  const char *name = uv_err_name(-err);
  char text[512];
  snprintf(text, sizeof text, "%s %s %s (%s)", syscall, file == NULL ? "" : file, name, strerror(err));
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, msg, &error);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sys);
  napi_set_named_property(env, error, "syscall", sys);
  napi_throw(env, error);
  return NULL;
}

static napi_value throw_type(napi_env env, const char *what) {
  napi_throw_type_error(env, NULL, what);
  return NULL;
}

// A JS string as a malloc'd C string; NULL (and a pending exception) when it is not a string
// or holds a NUL byte (which would silently cut an argument or variable short).
static char *c_string(napi_env env, napi_value v) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
    throw_type(env, "expected a string");
    return NULL;
  }
  char *s = malloc(len + 1);
  if (s == NULL) return NULL;
  napi_get_value_string_utf8(env, v, s, len + 1, &len);
  if (strlen(s) != len) {
    free(s);
    throw_type(env, "a string holds a NUL byte");
    return NULL;
  }
  return s;
}

// fd moved to MAX_FDS or above: the child's targets are 0..MAX_FDS-1, and a dup2 onto itself
// would keep close-on-exec (fd 0-2 can be free when the emperor runs with them closed).
static int above_targets(int fd) {
  if (fd < 0 || fd >= MAX_FDS) return fd;
  int moved = fcntl(fd, F_DUPFD_CLOEXEC, MAX_FDS);
  int saved = errno;
  close(fd);
  errno = saved;
  return moved;
}

static void free_list(char **list) {
  if (list == NULL) return;
  for (char **p = list; *p != NULL; p++) free(*p);
  free(list);
}

// A JS array of strings as a NULL-terminated malloc'd list.
static char **c_list(napi_env env, napi_value arr) {
  uint32_t n = 0;
  if (napi_get_array_length(env, arr, &n) != napi_ok) {
    throw_type(env, "expected an array of strings");
    return NULL;
  }
  char **list = calloc(n + 1, sizeof(char *));
  if (list == NULL) return NULL;
  for (uint32_t i = 0; i < n; i++) {
    napi_value item;
    napi_get_element(env, arr, i, &item);
    list[i] = c_string(env, item);
    if (list[i] == NULL) {
      free_list(list);
      return NULL;
    }
  }
  return list;
}

static child_t **slot_of(pid_t pid) {
  child_t **p = &table[(unsigned)pid % BUCKETS];
  while (*p != NULL && (*p)->pid != pid) p = &(*p)->next;
  return p;
}

static void forget(child_t **slot) {
  *slot = (*slot)->next;
  if (--live == 0) uv_unref((uv_handle_t *)&sigchld);
}

// Reaps the child in *slot if it has exited: unlinked then, its exit in its info.
static child_t *reap(child_t **slot) {
  child_t *c = *slot;
  memset(&c->info, 0, sizeof c->info);
  if (waitid(P_PID, (id_t)c->pid, &c->info, WEXITED | WNOHANG) != 0) {
    // ECHILD: someone else reaped it (nothing in the emperor does): an unknown exit, said once.
    if (errno == EINTR) return NULL;
    c->info.si_code = 0;
  } else if (c->info.si_pid == 0) {
    return NULL;  // still running
  }
  forget(slot);
  return c;
}

// Tells JS how the child exited, and lets go of it.
static void report(child_t *c) {
  napi_env env = c->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, recv, argv[2];
  napi_get_reference_value(env, c->callback, &cb);
  napi_get_global(env, &recv);  // make_callback wants an object as `this`
  if (c->info.si_code == CLD_EXITED) {
    napi_create_int32(env, c->info.si_status, &argv[0]);
    napi_get_null(env, &argv[1]);
  } else if (c->info.si_code == CLD_KILLED || c->info.si_code == CLD_DUMPED) {
    napi_get_null(env, &argv[0]);
    napi_create_int32(env, c->info.si_status, &argv[1]);
  } else {
    napi_get_null(env, &argv[0]);
    napi_get_null(env, &argv[1]);
  }
  napi_value result;
  // make_callback runs the microtasks and reports an exception as uncaught, like any I/O callback.
  napi_make_callback(env, c->context, recv, cb, 2, argv, &result);
  napi_close_handle_scope(env, scope);
  napi_delete_reference(env, c->callback);
  napi_async_destroy(env, c->context);
  free(c);
}

// Reaps every exited child of ours, then reports them (a report may start new children).
// The kernel names one zombie at a time (WNOWAIT leaves it for its owner): ours are reaped
// one by one, in time proportional to the exits. A zombie of child_process's in front (libuv
// reaps it in this same signal dispatch) hides ours behind it: then every child of ours is
// asked in turn. One of ours that exits after it was asked raises a SIGCHLD of its own.
static void collect(void) {
  child_t *done = NULL;
  bool blocked = false;
  for (;;) {
    siginfo_t peek;
    memset(&peek, 0, sizeof peek);
    if (waitid(P_ALL, 0, &peek, WEXITED | WNOHANG | WNOWAIT) != 0) {
      if (errno == EINTR) continue;
      break;  // ECHILD: no children at all
    }
    if (peek.si_pid == 0) break;  // none has exited
    child_t **slot = slot_of(peek.si_pid);
    child_t *c = *slot == NULL ? NULL : reap(slot);
    if (c == NULL) {
      blocked = *slot == NULL;
      if (!blocked) continue;  // EINTR
      break;
    }
    c->next = done;
    done = c;
  }
  if (blocked) {
    for (unsigned b = 0; b < BUCKETS && live > 0; b++) {
      child_t **slot = &table[b];
      while (*slot != NULL) {
        child_t *c = reap(slot);
        if (c == NULL) {
          slot = &(*slot)->next;
          continue;
        }
        c->next = done;
        done = c;
      }
    }
  }
  while (done != NULL) {
    child_t *c = done;
    done = c->next;
    report(c);
  }
}

static void on_sigchld(uv_signal_t *handle, int signum) {
  (void)handle;
  (void)signum;
  collect();
}

// Before the first clone, so no SIGCHLD of ours can come before libuv catches it. 0 or a uv error.
static int watch_exits(napi_env env) {
  uv_loop_t *loop = NULL;
  napi_get_uv_event_loop(env, &loop);
  if (watch_loop != NULL) return watch_loop == loop ? 0 : UV_EINVAL;
  int err = uv_signal_init(loop, &sigchld);
  if (err == 0) err = uv_signal_start(&sigchld, on_sigchld, SIGCHLD);
  if (err != 0) return err;
  // It keeps the emperor's loop alive only while a child of ours lives.
  uv_unref((uv_handle_t *)&sigchld);
  watch_loop = loop;
  return 0;
}

// What the child needs, prepared before the clone: it shares this memory and must not allocate.
typedef struct {
  const char *file;
  char **argv;
  char **envp;
  const char *cwd;
  int nfds;
  int src[MAX_FDS];
  char **join;         // cgroup.procs files to write "0" (this process) into
  long open_files;     // RLIMIT_NOFILE, or -1
  int pdeathsig;       // 0 = none
  pid_t parent;        // to catch a parent that died before the signal was armed
  // The child's own /proc/self/stat, read before its exec: its start time (field 22) without
  // the emperor reading /proc/<pid>/stat afterwards, which can wait for the child's exec.
  char stat[1024];
  volatile int stat_len;
  // Written by the child when a step fails (it then _exits), read by the parent after the clone.
  volatile int err;
  volatile int stage;
  volatile int join_index;
} child_args_t;

enum { STAGE_NONE, STAGE_SETSID, STAGE_DUP, STAGE_CHDIR, STAGE_CGROUP, STAGE_RLIMIT, STAGE_PDEATHSIG, STAGE_EXEC };

// The kernel's struct sigaction (x86_64, arm64): raw rt_sigaction also resets the signals glibc
// keeps for itself (32, 33), which its sigaction refuses, so the app starts with all defaults.
struct kernel_sigaction {
  void *handler;
  unsigned long flags;
  void *restorer;
  unsigned long mask;
};

#define CHILD_FAIL(a, st) \
  do {                    \
    (a)->err = errno;     \
    (a)->stage = (st);    \
    _exit(127);           \
  } while (0)

// Runs in the child on its own stack, sharing the emperor's memory until execve: only system
// calls here, no malloc, no locks, nothing that could touch state another thread holds.
static int child_main(void *arg) {
  child_args_t *a = (child_args_t *)arg;
  struct kernel_sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.handler = SIG_DFL;
  for (int sig = 1; sig < 65; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    syscall(SYS_rt_sigaction, sig, &dfl, NULL, 8);
  }
  if (setsid() < 0) CHILD_FAIL(a, STAGE_SETSID);
  // Every source is above the target range (see above_targets), so dup2 always clears
  // close-on-exec on the target and never overwrites a source still needed.
  for (int i = 0; i < a->nfds; i++)
    if (dup2(a->src[i], i) < 0) CHILD_FAIL(a, STAGE_DUP);
  if (chdir(a->cwd) < 0) CHILD_FAIL(a, STAGE_CHDIR);
  for (int i = 0; a->join != NULL && a->join[i] != NULL; i++) {
    a->join_index = i;
    int fd = open(a->join[i], O_WRONLY | O_CLOEXEC);
    if (fd < 0) CHILD_FAIL(a, STAGE_CGROUP);
    // "0" is the writing process: this child, whatever its pid.
    if (write(fd, "0", 1) != 1) CHILD_FAIL(a, STAGE_CGROUP);
    close(fd);
  }
  if (a->open_files >= 0) {
    struct rlimit rl = {(rlim_t)a->open_files, (rlim_t)a->open_files};
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) CHILD_FAIL(a, STAGE_RLIMIT);
  }
  if (a->pdeathsig != 0) {
    if (prctl(PR_SET_PDEATHSIG, a->pdeathsig) != 0) CHILD_FAIL(a, STAGE_PDEATHSIG);
    // The emperor died between the clone and the prctl: the signal will never come.
    if (getppid() != a->parent) _exit(127);
  }
  int sfd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
  if (sfd >= 0) {
    ssize_t n = read(sfd, a->stat, sizeof a->stat - 1);
    a->stat_len = n > 0 ? (int)n : 0;
    close(sfd);
  }
  unsigned long none = 0;
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, 8);
  execve(a->file, a->argv, a->envp);
  CHILD_FAIL(a, STAGE_EXEC);
  return 127;
}

#define CHILD_STACK (64 * 1024)

// The stage's error, worded for the vassal's status and log.
static napi_value throw_stage(napi_env env, child_args_t *a) {
  char what[1024];
  const char *name = uv_err_name(-a->err);
  switch (a->stage) {
    case STAGE_CGROUP:
      snprintf(what, sizeof what, "cannot move into cgroup: %s: %s (%s)", a->join[a->join_index], strerror(a->err), name);
      break;
    case STAGE_RLIMIT:
      snprintf(what, sizeof what, "cannot set open_files to %ld: %s (%s)", a->open_files, strerror(a->err), name);
      break;
    case STAGE_CHDIR:
      snprintf(what, sizeof what, "cannot change to the working directory %s: %s (%s)", a->cwd, strerror(a->err), name);
      break;
    case STAGE_EXEC:
      // Worded as Node's own spawn errors ("spawn FILE ENOENT"), with the system's text after.
      snprintf(what, sizeof what, "spawn %s %s (%s)", a->file, name, strerror(a->err));
      break;
    default:
      snprintf(what, sizeof what, "spawn %s: setting up the child failed (stage %d): %s (%s)", a->file, a->stage, strerror(a->err), name);
  }
  napi_value msg, code, error;
  napi_create_string_utf8(env, what, NAPI_AUTO_LENGTH, &msg);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, msg, &error);
  napi_throw(env, error);
  return NULL;
}

// spawn(file, argv, envp, cwd, stdio, join, openFiles, pdeathsig, onExit) -> { pid, fds, stat }
//   file: the executable's path (resolved by the caller; no PATH search here)
//   stdio: one entry per child fd from 0: 0 = /dev/null, 1 = a socketpair (its other end is
//          returned in fds at the same index, close-on-exec; -1 elsewhere)
//   join: cgroup.procs files the child moves itself into before it execs
//   openFiles: RLIMIT_NOFILE (soft and hard) for the child, or -1
//   pdeathsig: signal number the child gets when the emperor dies, or 0
//   onExit(code, signal): once, when the child has exited and been reaped (signal is a number)
//   stat: the child's /proc/self/stat as read just before its exec ('' when it could not)
static napi_value spawn_child(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 9;
  napi_value args[9];
  napi_get_cb_info(env, cbinfo, &argc, args, NULL, NULL);
  if (argc < 9) return throw_type(env, "spawn(file, argv, envp, cwd, stdio, join, openFiles, pdeathsig, onExit)");
  napi_valuetype cbtype;
  napi_typeof(env, args[8], &cbtype);
  if (cbtype != napi_function) return throw_type(env, "onExit must be a function");

  uint32_t nfds = 0;
  napi_get_array_length(env, args[4], &nfds);
  if (nfds > MAX_FDS) return throw_type(env, "too many stdio entries");
  int kinds[MAX_FDS];
  for (uint32_t i = 0; i < nfds; i++) {
    napi_value item;
    napi_get_element(env, args[4], i, &item);
    if (napi_get_value_int32(env, item, &kinds[i]) != napi_ok) return throw_type(env, "stdio entries are 0 or 1");
  }
  int64_t open_files = -1;
  int32_t pdeathsig = 0;
  if (napi_get_value_int64(env, args[6], &open_files) != napi_ok) return throw_type(env, "openFiles must be a number");
  if (napi_get_value_int32(env, args[7], &pdeathsig) != napi_ok) return throw_type(env, "pdeathsig must be a number");

  child_args_t a;
  memset(&a, 0, sizeof a);
  a.open_files = (long)open_files;
  a.pdeathsig = pdeathsig;
  a.parent = getpid();
  char *file = NULL, *cwd = NULL;
  char **argv = NULL, **envp = NULL, **join = NULL;
  int parent[MAX_FDS], child[MAX_FDS];
  for (int i = 0; i < MAX_FDS; i++) parent[i] = child[i] = -1;
  int devnull = -1, err = 0;
  const char *failed = "spawn";
  napi_value ret = NULL;
  void *stack = MAP_FAILED;
  pid_t pid = -1;

  if ((file = c_string(env, args[0])) == NULL) goto out;
  if ((argv = c_list(env, args[1])) == NULL) goto out;
  if ((envp = c_list(env, args[2])) == NULL) goto out;
  if ((cwd = c_string(env, args[3])) == NULL) goto out;
  if ((join = c_list(env, args[5])) == NULL) goto out;

  // Every descriptor the emperor makes here is close-on-exec: a start that races this one must
  // not hand them to its own child (the child's dup2 clears the flag on its own copies).
  devnull = above_targets(open("/dev/null", O_RDWR | O_CLOEXEC));
  if (devnull < 0) { err = errno; failed = "open /dev/null"; goto out; }
  for (uint32_t i = 0; i < nfds; i++) {
    if (kinds[i] != 1) continue;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) { err = errno; failed = "socketpair"; goto out; }
    parent[i] = sv[0];
    child[i] = above_targets(sv[1]);
    if (child[i] < 0) { err = errno; failed = "socketpair"; goto out; }
  }
  a.file = file;
  a.argv = argv;
  a.envp = envp;
  a.cwd = cwd;
  a.join = join;
  a.nfds = (int)nfds;
  for (uint32_t i = 0; i < nfds; i++) a.src[i] = kinds[i] == 1 ? child[i] : devnull;

  int uverr = watch_exits(env);
  if (uverr != 0) { err = -uverr; failed = "uv_signal_start"; goto out; }
  stack = mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) { err = errno; failed = "mmap"; goto out; }
  // No signal handler of the emperor may run in the child (it would run on the emperor's
  // memory): everything is blocked across the clone, and the child unblocks only after it has
  // reset every disposition. The calling thread gets its own mask back right after.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pid = clone(child_main, (char *)stack + CHILD_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, &a);
  int clone_errno = errno;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (pid < 0) { err = clone_errno; failed = "clone"; goto out; }
  if (a.stage != STAGE_NONE) {
    // The child failed before or at its exec and has exited: reap it, report the step.
    waitpid(pid, NULL, 0);
    throw_stage(env, &a);
    goto out;
  }

  child_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    // Never lose track of a child: one whose exit cannot be reported is killed and reaped.
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    err = ENOMEM;
    failed = "spawn";
    goto out;
  }
  c->env = env;
  c->pid = pid;
  // Reaped only from the loop's SIGCHLD watcher, which runs after this returns.
  child_t **slot = slot_of(pid);
  *slot = c;
  if (live++ == 0) uv_ref((uv_handle_t *)&sigchld);
  napi_create_reference(env, args[8], 1, &c->callback);
  napi_value resource_name;
  napi_create_string_utf8(env, "EMPEROR_VASSAL_EXIT", NAPI_AUTO_LENGTH, &resource_name);
  napi_async_init(env, NULL, resource_name, &c->context);

  napi_value result, jpid, jfds;
  napi_create_object(env, &result);
  napi_create_int32(env, pid, &jpid);
  napi_create_array_with_length(env, nfds, &jfds);
  for (uint32_t i = 0; i < nfds; i++) {
    napi_value fd;
    napi_create_int32(env, parent[i], &fd);
    napi_set_element(env, jfds, i, fd);
    parent[i] = -1;  // handed over
  }
  napi_set_named_property(env, result, "pid", jpid);
  napi_set_named_property(env, result, "fds", jfds);
  napi_value jstat;
  napi_create_string_utf8(env, a.stat, (size_t)a.stat_len, &jstat);
  napi_set_named_property(env, result, "stat", jstat);
  ret = result;

out:
  if (stack != MAP_FAILED) munmap(stack, CHILD_STACK);
  if (devnull >= 0) close(devnull);
  for (int i = 0; i < MAX_FDS; i++) {
    if (child[i] >= 0) close(child[i]);
    if (parent[i] >= 0) close(parent[i]);
  }
  if (ret == NULL && err != 0) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) throw_errno(env, err, failed, file);
  }
  free(file);
  free(cwd);
  free_list(argv);
  free_list(envp);
  free_list(join);
  return ret;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "spawn", NAPI_AUTO_LENGTH, spawn_child, NULL, &fn);
  napi_set_named_property(env, exports, "spawn", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
