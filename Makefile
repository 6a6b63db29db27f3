# The one install list: debian/rules and rpm/trafficjam.spec both run `make install` (with
# DESTDIR and the distribution's directories); the binary is built by cargo beforehand.
#
#   cargo build --release --locked && make install DESTDIR=/tmp/root

prefix ?= /usr
bindir ?= $(prefix)/bin
datadir ?= $(prefix)/share
mandir ?= $(datadir)/man
docdir ?= $(datadir)/doc/trafficjam
sysconfdir ?= /etc
# /lib/systemd/system on Debian 12, /usr/lib/systemd/system on later systems.
unitdir ?= $(shell pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || echo $(prefix)/lib/systemd/system)
sysusersdir ?= $(prefix)/lib/sysusers.d
modulesloaddir ?= $(prefix)/lib/modules-load.d
dbuspolicydir ?= $(datadir)/dbus-1/system.d
CARGO_TARGET_DIR ?= target
binary ?= $(CARGO_TARGET_DIR)/release/trafficjam

INSTALL ?= install

.PHONY: all install
all:
	@echo "build with cargo build --release --locked, then make install" >&2

install:
	$(INSTALL) -D -m 0755 $(binary) $(DESTDIR)$(bindir)/trafficjam
	$(INSTALL) -D -m 0644 systemd/trafficjam.service $(DESTDIR)$(unitdir)/trafficjam.service
	$(INSTALL) -D -m 0644 etc/trafficjam/trafficjam.toml $(DESTDIR)$(sysconfdir)/trafficjam/trafficjam.toml
	$(INSTALL) -D -m 0644 packaging/org.trafficjam1.conf $(DESTDIR)$(dbuspolicydir)/org.trafficjam1.conf
	$(INSTALL) -D -m 0644 packaging/trafficjam.sysusers $(DESTDIR)$(sysusersdir)/trafficjam.conf
	$(INSTALL) -D -m 0644 packaging/trafficjam.modules-load $(DESTDIR)$(modulesloaddir)/trafficjam.conf
	$(INSTALL) -D -m 0644 packaging/trafficjam.8 $(DESTDIR)$(mandir)/man8/trafficjam.8
	$(INSTALL) -D -m 0644 packaging/trafficjam.toml.5 $(DESTDIR)$(mandir)/man5/trafficjam.toml.5
	$(INSTALL) -D -m 0644 README.md $(DESTDIR)$(docdir)/README.md
	$(INSTALL) -D -m 0644 NEWS.md $(DESTDIR)$(docdir)/NEWS.md
	$(INSTALL) -D -m 0644 packaging/socket-proxy.conf $(DESTDIR)$(docdir)/examples/socket-proxy.conf
	$(INSTALL) -D -m 0644 packaging/swarm.conf $(DESTDIR)$(docdir)/examples/swarm.conf
