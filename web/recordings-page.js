// The recordings.html page's start (a file, not inline: the pages' Content-Security-Policy
// runs only scripts this server serves).
import { recordingsPage } from '/assets/gradcam.js';
recordingsPage();
