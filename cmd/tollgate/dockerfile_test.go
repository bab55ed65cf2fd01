package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// No Docker engine runs where the tests do, so the image is never built
// here: these tests check what can go wrong without one. The Dockerfile's
// essentials are read from the file; the entry point, which does the real
// work of supervising two processes, runs for real with stub `ollama` and
// `tollgate` commands on PATH.

const repoRoot = "../.."

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
}

func readDockerfile(t *testing.T, name string) []instruction {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, name))
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasPrefix(trimmed, "#") { // a comment inside a continued instruction
			continue
		}
		if strings.HasSuffix(trimmed, `\`) {
			cur.WriteString(strings.TrimSuffix(trimmed, `\`) + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

func TestDockerfileGPU(t *testing.T) {
	ins := readDockerfile(t, "Dockerfile.gpu")
	var stages []string     // FROM lines
	var final []instruction // the last stage's instructions
	globalArgs := map[string]bool{}
	all := map[string][]string{}
	for _, in := range ins {
		switch {
		case in.cmd == "FROM":
			stages = append(stages, in.args)
			final = nil
			// A variable in FROM must be an ARG declared before the first FROM.
			for _, m := range regexp.MustCompile(`\$\{?(\w+)`).FindAllStringSubmatch(in.args, -1) {
				if !globalArgs[m[1]] {
					t.Errorf("FROM %s uses $%s, which is not an ARG declared before the first FROM", in.args, m[1])
				}
			}
		case in.cmd == "ARG" && len(stages) == 0:
			name, _, _ := strings.Cut(in.args, "=")
			globalArgs[name] = true
		}
		final = append(final, in)
		all[in.cmd] = append(all[in.cmd], in.args)
	}
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, got FROM %q", stages)
	}
	if !strings.HasPrefix(stages[0], "golang:1.26-bookworm ") {
		t.Errorf("builder stage FROM %q, want golang:1.26-bookworm", stages[0])
	}
	if !strings.HasPrefix(stages[len(stages)-1], "ollama/ollama:") {
		t.Errorf("runtime stage FROM %q, want the official ollama/ollama image", stages[len(stages)-1])
	}

	build := strings.Join(all["RUN"], "\n")
	for _, want := range []string{"CGO_ENABLED=1 go build", "-trimpath", "-X main.version=${VERSION}", "./cmd/tollgate"} {
		if !strings.Contains(build, want) {
			t.Errorf("no RUN builds with %q", want)
		}
	}

	has := func(cmd, pattern string) {
		t.Helper()
		re := regexp.MustCompile(pattern)
		for _, in := range final {
			if in.cmd == cmd && re.MatchString(in.args) {
				return
			}
		}
		t.Errorf("the runtime stage has no %s matching %q", cmd, pattern)
	}
	has("HEALTHCHECK", `CMD .*curl .*/readyz`)
	has("EXPOSE", `\b8080\b`)
	has("VOLUME", `"/data"`)
	has("VOLUME", `"/root/\.ollama"`)
	has("ENV", `\bTOLLGATE_ADDR=:8080\b`)
	has("ENV", `\bTOLLGATE_DB=/data/tollgate\.db\b`)
	has("ENV", `\bOLLAMA_HOST=127\.0\.0\.1:11434\b`)
	has("RUN", `apt-get install .*\bcurl\b`) // the Ollama image has no curl of its own
	has("COPY", `^--from=build \S+ /usr/local/bin/tollgate$`)
	has("COPY", `^deploy/entrypoint\.sh /usr/local/bin/tollgate-entrypoint$`)
	has("ENTRYPOINT", `/usr/local/bin/tollgate-entrypoint`)

	// Every file copied from the build context exists and is not excluded
	// by .dockerignore (exact names only: the patterns there are simple).
	ignore, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	ignored := map[string]bool{}
	for _, l := range strings.Split(string(ignore), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			ignored[strings.TrimPrefix(l, "/")] = true
		}
	}
	for _, args := range all["COPY"] {
		fields := strings.Fields(args)
		if strings.HasPrefix(fields[0], "--from=") {
			continue
		}
		for _, src := range fields[:len(fields)-1] {
			if strings.HasPrefix(src, "--") || src == "." {
				continue
			}
			if _, err := os.Stat(filepath.Join(repoRoot, src)); err != nil {
				t.Errorf("COPY %s: %v", src, err)
			}
			if ignored[src] {
				t.Errorf("COPY %s, but .dockerignore excludes it", src)
			}
		}
	}
	for _, must := range []string{".ollama-test", ".git"} {
		if !ignored[must] {
			t.Errorf(".dockerignore does not exclude %s (it would be sent as build context)", must)
		}
	}
}

func TestEntrypointScript(t *testing.T) {
	script, err := filepath.Abs(filepath.Join(repoRoot, "deploy", "entrypoint.sh"))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(script)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&0o111 != 0o111 {
		t.Errorf("%s has mode %v; want it executable", script, fi.Mode())
	}
	b, _ := os.ReadFile(script)
	if !strings.HasPrefix(string(b), "#!/bin/sh\n") {
		t.Errorf("%s does not start with #!/bin/sh", script)
	}
	if out, err := exec.Command("sh", "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("sh -n %s: %v\n%s", script, err, out)
	}
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep command to run the entry point with")
	}

	cases := []struct {
		name  string
		env   []string
		act   func(e *entrypoint) // what happens once both run
		code  int                 // the entry point's exit code
		order []string            // lines the stubs must log, in this order
		never []string            // lines they must not log
		check func(t *testing.T, e *entrypoint)
	}{
		{
			name:  "SIGTERM drains tollgate before stopping ollama",
			act:   func(e *entrypoint) { e.signal(syscall.SIGTERM) },
			code:  0,
			order: []string{"ollama serve", "tollgate serve --log-level debug", "tollgate got TERM", "tollgate drained", "ollama got TERM"},
		},
		{
			name:  "SIGINT does the same",
			act:   func(e *entrypoint) { e.signal(syscall.SIGINT) },
			code:  0,
			order: []string{"tollgate got TERM", "tollgate drained", "ollama got TERM"},
		},
		{
			name:  "tollgate dies: ollama is stopped, exit non-zero",
			act:   func(e *entrypoint) { e.touch("tollgate-die") },
			code:  3,
			order: []string{"tollgate exits 3", "ollama got TERM"},
		},
		{
			name:  "ollama dies: tollgate drains, exit non-zero",
			act:   func(e *entrypoint) { e.touch("ollama-die") },
			code:  7,
			order: []string{"ollama exits 7", "tollgate got TERM", "tollgate drained"},
		},
		{
			name:  "ollama never answers: give up after OLLAMA_START_TIMEOUT",
			env:   []string{"STUB_OLLAMA_NEVER_READY=1", "OLLAMA_START_TIMEOUT=2"},
			code:  1,
			order: []string{"ollama serve", "ollama got TERM"},
			never: []string{"tollgate serve"},
		},
		{
			name:  "ollama fails at start",
			env:   []string{"STUB_OLLAMA_FAIL_AT_START=5"},
			code:  5,
			order: []string{"ollama serve"},
			never: []string{"tollgate serve"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := startEntrypoint(t, script, tc.env, "--log-level", "debug")
			if tc.act != nil {
				e.waitLog(t, "tollgate serve")
				tc.act(e)
			}
			code := e.wait(t, 15*time.Second)
			log := e.log()
			if code != tc.code {
				t.Errorf("entry point exited %d, want %d\nstub log:\n%s\nstderr:\n%s", code, tc.code, log, e.stderr.String())
			}
			at := 0
			for _, want := range tc.order {
				i := strings.Index(log[at:], want+"\n")
				if i < 0 {
					t.Errorf("stub log lacks %q after position %d:\n%s\nstderr:\n%s", want, at, log, e.stderr.String())
					break
				}
				at += i + len(want)
			}
			for _, not := range tc.never {
				if strings.Contains(log, not) {
					t.Errorf("stub log has %q:\n%s", not, log)
				}
			}
		})
	}
}

// The stubs log what happens to them, one line each, to $STUB_DIR/log, and
// take orders from files in $STUB_DIR. The tollgate stub takes 300 ms to
// "drain" after SIGTERM, so the log shows whether ollama outlived it.
const ollamaStub = `#!/bin/sh
log() { echo "$*" >> "$STUB_DIR/log"; }
case "$1" in
serve)
	log "ollama serve"
	if [ -n "${STUB_OLLAMA_FAIL_AT_START:-}" ]; then log "ollama exits $STUB_OLLAMA_FAIL_AT_START"; exit "$STUB_OLLAMA_FAIL_AT_START"; fi
	trap 'log "ollama got TERM"; exit 0' TERM
	[ -n "${STUB_OLLAMA_NEVER_READY:-}" ] || : > "$STUB_DIR/ollama-ready"
	while :; do
		if [ -f "$STUB_DIR/ollama-die" ]; then log "ollama exits 7"; exit 7; fi
		sleep 0.05 & wait $!
	done ;;
list)
	[ -f "$STUB_DIR/ollama-ready" ] ;;
*)
	exit 2 ;;
esac
`

const tollgateStub = `#!/bin/sh
log() { echo "$*" >> "$STUB_DIR/log"; }
trap 'log "tollgate got TERM"; sleep 0.3; log "tollgate drained"; exit 0' TERM
log "tollgate $*"
while :; do
	if [ -f "$STUB_DIR/tollgate-die" ]; then log "tollgate exits 3"; exit 3; fi
	sleep 0.05 & wait $!
done
`

type entrypoint struct {
	dir     string
	cmd     *exec.Cmd
	stderr  *syncBuffer
	done    chan struct{}
	waitErr error // from cmd.Wait, once done is closed
}

func startEntrypoint(t *testing.T, script string, env []string, args ...string) *entrypoint {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"ollama": ollamaStub, "tollgate": tollgateStub} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e := &entrypoint{dir: dir, stderr: &syncBuffer{}, done: make(chan struct{})}
	e.cmd = exec.Command(script, args...)
	e.cmd.Env = append([]string{"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"), "STUB_DIR=" + dir}, env...)
	e.cmd.Stderr = e.stderr
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its own group, to clean up stubs
	e.cmd.WaitDelay = 2 * time.Second
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { e.waitErr = e.cmd.Wait(); close(e.done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL) // the group: any stub left behind
		<-e.done
	})
	return e
}

func (e *entrypoint) signal(sig syscall.Signal) { _ = e.cmd.Process.Signal(sig) }

func (e *entrypoint) touch(name string) { _ = os.WriteFile(filepath.Join(e.dir, name), nil, 0o644) }

func (e *entrypoint) log() string {
	b, _ := os.ReadFile(filepath.Join(e.dir, "log"))
	return string(b)
}

func (e *entrypoint) waitLog(t *testing.T, line string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(e.log(), line) {
		if time.Now().After(deadline) {
			t.Fatalf("stubs never logged %q:\n%s\nstderr:\n%s", line, e.log(), e.stderr.String())
		}
		select {
		case <-e.done:
			t.Fatalf("entry point exited before %q was logged:\n%s\nstderr:\n%s", line, e.log(), e.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// wait returns the entry point's exit code, failing the test if it runs
// longer than d.
func (e *entrypoint) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-e.done:
	case <-time.After(d):
		t.Fatalf("entry point still running after %v:\n%s\nstderr:\n%s", d, e.log(), e.stderr.String())
	}
	var ee *exec.ExitError
	if e.waitErr != nil && !errors.As(e.waitErr, &ee) {
		t.Fatalf("entry point: %v", e.waitErr)
	}
	return e.cmd.ProcessState.ExitCode()
}
