// Counters of what the create path keeps in memory (placement's view of the hosts, the templates
// teams asked for), bumped by every write this process makes to what those views are made of:
// a cached view is used only while its counter is unchanged. Writes by other processes (another
// control plane) are seen when the cached views expire (seconds; see placement.ts and
// SandboxService's template cache).
let hosts = 0;
let templates = 0;

export const catalogVersion = {
  /** Hosts: their status, address, runtimes, capacity (by registration), and the templates on their disks. */
  hosts: (): number => hosts,
  templates: (): number => templates,
  hostsChanged(): void {
    hosts++;
  },
  templatesChanged(): void {
    templates++;
  },
};
