package realollama

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"tollgate/internal/tinymodel"
)

// EnvBin and EnvTestBin name the ollama binary [Start] runs (EnvTestBin is
// written by scripts/ollama-test-server.sh into its env file: the binary
// that serves the shared server); by default "ollama" on PATH, then
// $HOME/go/bin/ollama.
const (
	EnvBin     = "OLLAMA_BIN"
	EnvTestBin = "TOLLGATE_TEST_OLLAMA_BIN"
)

// Server is an Ollama process a test started with [Start]: one more GPU
// host, serving the same tiny model as the shared server, on its own port
// with its own model store. It is stopped when the test ends.
type Server struct {
	// URL is its base URL, http://127.0.0.1:port; it stays the same across
	// Stop and Restart.
	URL string

	t    testing.TB
	bin  string
	dir  string
	addr string
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts another Ollama serving model (the name [Require] returned),
// with OLLAMA_NUM_PARALLEL=parallel. Like Require it skips the test loudly
// when no ollama binary is found, or fails it when TOLLGATE_REQUIRE_OLLAMA=1.
func Start(t testing.TB, model string, parallel int) *Server {
	t.Helper()
	bin := findBin()
	if bin == "" {
		msg := "REAL OLLAMA: no ollama binary for a second server (set " + EnvBin + ", or run scripts/ollama-test-server.sh, which builds ~/go/bin/ollama)"
		if os.Getenv(EnvRequire) == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg + "; test skipped")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &Server{URL: "http://" + addr, t: t, bin: bin, dir: t.TempDir(), addr: addr}
	for _, d := range []string{"models", "home"} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s.start(parallel)
	t.Cleanup(s.Stop)
	if err := tinymodel.WriteFile(filepath.Join(s.dir, "tiny.gguf"), tinymodel.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.dir, "Modelfile"), []byte("FROM ./tiny.gguf\nPARAMETER num_thread 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	create := exec.Command(bin, "create", model, "-f", "Modelfile")
	create.Dir = s.dir
	create.Env = append(s.env(), "OLLAMA_HOST="+addr)
	if out, err := create.CombinedOutput(); err != nil {
		t.Fatalf("ollama create %s on the second server: %v\n%s", model, err, out)
	}
	return s
}

func (s *Server) env() []string {
	return []string{"HOME=" + filepath.Join(s.dir, "home"), "PATH=" + os.Getenv("PATH"),
		"OLLAMA_MODELS=" + filepath.Join(s.dir, "models"), "OLLAMA_NOPRUNE=1", "OLLAMA_MAX_QUEUE=512"}
}

// start runs ollama serve and waits until it answers.
func (s *Server) start(parallel int) {
	s.t.Helper()
	cmd := exec.Command(s.bin, "serve")
	cmd.Env = append(s.env(), "OLLAMA_HOST="+s.addr, "OLLAMA_KEEP_ALIVE=-1",
		fmt.Sprintf("OLLAMA_NUM_PARALLEL=%d", parallel), "OLLAMA_MAX_LOADED_MODELS=2")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its model runners too are stopped with it
	logf, err := os.OpenFile(filepath.Join(s.dir, "serve.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		s.t.Fatalf("start %s serve: %v", s.bin, err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(s.done) }()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if answers(context.Background(), s.URL) == nil {
			return
		}
		select {
		case <-s.done:
			log, _ := os.ReadFile(filepath.Join(s.dir, "serve.log"))
			s.t.Fatalf("the second ollama serve exited during start-up:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			s.Stop()
			s.t.Fatalf("the second ollama serve at %s did not answer within 30 s", s.URL)
		}
	}
}

// Stop kills the server and its model runners (SIGKILL, as a crash or a
// pulled plug would) and waits until they are gone. It does nothing when
// the server is not running.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
	s.cmd = nil
}

// Restart starts the server again on the same port, with the same models.
func (s *Server) Restart(parallel int) {
	s.t.Helper()
	s.Stop()
	s.start(parallel)
}

func findBin() string {
	for _, env := range []string{EnvBin, EnvTestBin} {
		if b := os.Getenv(env); b != "" {
			return b
		}
	}
	if b, err := exec.LookPath("ollama"); err == nil {
		return b
	}
	if home, err := os.UserHomeDir(); err == nil {
		if b := filepath.Join(home, "go", "bin", "ollama"); isExec(b) {
			return b
		}
	}
	return ""
}

func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// answers reports whether url answers GET /api/version now.
func answers(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(url, "/")+"/api/version", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	return nil
}
