package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// installHint is what a person has to run when testenv cannot install
// MariaDB itself.
const installHint = "sudo apt-get update && sudo apt-get install -y --no-install-recommends mariadb-server mariadb-client"

// binaries are the MariaDB programs the pair needs.
type binaries struct {
	mariadbd  string
	installDB string
}

// extraBinDirs are searched after PATH: a non-root PATH often lacks sbin.
var extraBinDirs = []string{"/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"}

// findBinaries looks for the MariaDB programs in PATH and extraBinDirs.
func findBinaries() (binaries, error) {
	find := func(name string) string {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		for _, d := range extraBinDirs {
			p := filepath.Join(d, name)
			if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
				return p
			}
		}
		return ""
	}
	var b binaries
	var missing []string
	for _, f := range []struct {
		name string
		path *string
	}{{"mariadbd", &b.mariadbd}, {"mariadb-install-db", &b.installDB}} {
		if *f.path = find(f.name); *f.path == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return b, fmt.Errorf("%s not found in PATH or %s", strings.Join(missing, " and "), strings.Join(extraBinDirs, ", "))
	}
	return b, nil
}

// ensureMariaDB returns the MariaDB programs, installing Debian's
// mariadb-server with apt-get when they are missing and we are root. A fresh
// CI machine thus needs no manual step; anyone else gets the exact command.
func ensureMariaDB(ctx context.Context, logf func(string, ...any)) (binaries, error) {
	b, err := findBinaries()
	if err == nil {
		return b, nil
	}
	if os.Geteuid() != 0 {
		return b, fmt.Errorf("testenv: MariaDB server is not installed (%v) and only root can install it; run: %s", err, installHint)
	}
	if _, lerr := exec.LookPath("apt-get"); lerr != nil {
		return b, fmt.Errorf("testenv: MariaDB server is not installed (%v) and apt-get is not available: install MariaDB 10.5.9 or newer (mariadbd and mariadb-install-db) with this system's package manager", err)
	}
	// One installer at a time across processes; apt's own lock would make
	// the second fail instead of wait.
	unlock, lerr := lockFile(ctx, filepath.Join(os.TempDir(), "throttler-testenv-install.lock"))
	if lerr != nil {
		return b, fmt.Errorf("testenv: install MariaDB: %w", lerr)
	}
	defer unlock()
	if b, err := findBinaries(); err == nil { // installed while we waited
		return b, nil
	}

	logf("testenv: MariaDB is not installed (%v); installing it with apt-get (about 20s)", err)
	t0 := time.Now()
	for _, args := range [][]string{
		{"update"},
		{"install", "-y", "--no-install-recommends", "mariadb-server", "mariadb-client"},
	} {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("testenv: install MariaDB: apt-get %s: %w\n%s\n(to install by hand: %s)",
				args[0], err, tailLines(out, 20), installHint)
		}
	}
	b, err = findBinaries()
	if err != nil {
		return b, fmt.Errorf("testenv: apt-get installed mariadb-server but %w", err)
	}
	logf("testenv: installed MariaDB (%.0fs)", time.Since(t0).Seconds())
	return b, nil
}

// galeraProviders are where Debian's galera-4 (and other distributions'
// packages) put the provider library.
var galeraProviders = []string{"/usr/lib/galera/libgalera_smm.so", "/usr/lib/libgalera_smm.so",
	"/usr/lib/galera-4/libgalera_smm.so", "/usr/lib64/galera-4/libgalera_smm.so", "/usr/lib64/galera/libgalera_smm.so"}

// galeraHint is what a person has to run when testenv cannot install the
// Galera provider itself.
const galeraHint = "sudo apt-get install -y --no-install-recommends galera-4 rsync socat"

// findGalera returns the provider library, and an error naming what is
// missing: the library, or rsync (the state transfers the nodes use).
func findGalera() (string, error) {
	var missing []string
	provider := ""
	for _, p := range galeraProviders {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			provider = p
			break
		}
	}
	if provider == "" {
		missing = append(missing, "the Galera provider (libgalera_smm.so in "+strings.Join(galeraProviders, ", ")+")")
	}
	if _, err := exec.LookPath("rsync"); err != nil {
		missing = append(missing, "rsync")
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("%s not found", strings.Join(missing, " and "))
	}
	return provider, nil
}

// ensureGalera returns the Galera provider library, installing Debian's
// galera-4 and rsync when they are missing and we are root (mariadb-server
// depends on both, so a machine where ensureMariaDB installed the server
// has them).
func ensureGalera(ctx context.Context) (string, error) {
	provider, err := findGalera()
	if err == nil {
		return provider, nil
	}
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("testenv: %v and only root can install it; run: %s", err, galeraHint)
	}
	if _, lerr := exec.LookPath("apt-get"); lerr != nil {
		return "", fmt.Errorf("testenv: %v and apt-get is not available: install Galera 4 and rsync with this system's package manager", err)
	}
	unlock, lerr := lockFile(ctx, filepath.Join(os.TempDir(), "throttler-testenv-install.lock"))
	if lerr != nil {
		return "", fmt.Errorf("testenv: install galera-4: %w", lerr)
	}
	defer unlock()
	for _, args := range [][]string{
		{"update"},
		{"install", "-y", "--no-install-recommends", "galera-4", "rsync", "socat"},
	} {
		if _, ferr := findGalera(); ferr == nil { // installed while we waited
			break
		}
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("testenv: install galera-4: apt-get %s: %w\n%s\n(to install by hand: %s)",
				args[0], err, tailLines(out, 20), galeraHint)
		}
	}
	provider, err = findGalera()
	if err != nil {
		return "", fmt.Errorf("testenv: apt-get installed galera-4 but %w", err)
	}
	return provider, nil
}
